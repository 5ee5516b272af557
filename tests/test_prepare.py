"""`ganops prepare` end to end through the real CLI, real files and real GX."""

from __future__ import annotations

import gzip
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import DEBIAN_FASHION, idx_bytes, write_idx_dataset, write_params

runner = CliRunner()


def prepare(tmp_path: Path, data: dict, name: str = "prepared"):
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / name
    res = runner.invoke(app, ["prepare", "--params", str(params), "--out", str(out),
                              "--raw", str(tmp_path / "raw"), "--validation", str(tmp_path / "validation")])
    return res, out


def assert_clean_failure(res, out: Path, code: int, *needles: str) -> None:
    assert res.exit_code == code, res.output
    for n in needles:
        assert n in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists(), "partial output left behind"
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temp dir left behind"


def test_prepare_small_idx_writes_loadable_validated_output(tmp_path, idx_dir):
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 300, "test": 100}
    assert meta["shape"] == [1, 28, 28] and meta["num_classes"] == 10
    assert meta["class_names"][0] == "T-shirt/top"
    from ganops.data.prepared import load_split

    x, y = load_split(out, "train")
    assert x.dtype.is_floating_point is False and tuple(x.shape) == (300, 1, 28, 28)
    assert str(y.dtype) == "torch.int64"
    import pandas as pd

    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest.columns[:6]) == ["split", "index", "label", "sha1", "mean", "std"]
    assert len(manifest) == 400
    report = json.loads((tmp_path / "validation" / "report.json").read_text())
    assert report["success"] and report["evaluated"] >= 10
    assert (tmp_path / "validation" / "docs" / "index.html").is_file()


def test_prepare_leaves_nothing_in_the_temp_dir(tmp_path, idx_dir, monkeypatch):
    import tempfile

    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))  # where GX's default site would go
    res, _ = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert res.exit_code == 0, res.output
    assert (tmp_path / "validation" / "docs" / "index.html").is_file()
    # Only Data Docs count: torch may put its own cache dir here, depending on test order.
    assert not list(systmp.rglob("index.html")), "Data Docs written outside --validation"


def test_prepare_is_byte_identical_across_runs(tmp_path, idx_dir):
    data = {"source": "fashion-mnist", "path": str(idx_dir), "limit": 250}
    r1, a = prepare(tmp_path, data, "a")
    r2, b = prepare(tmp_path, data, "b")
    assert r1.exit_code == 0 and r2.exit_code == 0
    for f in ("train.safetensors", "test.safetensors", "manifest.csv", "meta.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_limit_caps_train_with_a_seeded_subset(tmp_path, idx_dir):
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir), "limit": 120})
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["train"] == 120 and meta["limit"] == 120


def test_dedupe_drops_train_images_also_in_test(tmp_path):
    root = write_idx_dataset(tmp_path / "dup", n_train=300, n_test=100)
    with gzip.open(root / "train-images-idx3-ubyte.gz") as f:
        train = np.frombuffer(f.read()[16:], np.uint8).reshape(300, 28, 28).copy()
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        test = np.frombuffer(f.read()[16:], np.uint8).reshape(100, 28, 28)
    train[5] = test[7]
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(train))
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(root)})
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dedupe_removed"] == 1 and meta["counts"]["train"] == 299
    # with dedupe off the shared image is a validation failure, not silently kept
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(root), "dedupe": False}, "nodedupe")
    assert_clean_failure(res, out, 1, "in_other_split", "expectations failed")


def test_folder_source_resizes_and_splits_per_class(tmp_path, image_folder):
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder), "image_size": 32,
                                  "channels": 3, "test_fraction": 0.25})
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["class_names"] == ["cat", "dog", "fox"]
    assert meta["shape"] == [3, 32, 32]
    assert meta["counts"] == {"train": 27, "test": 9}


def test_blank_image_fails_validation_with_example_rows(tmp_path, image_folder):
    from PIL import Image

    Image.new("L", (20, 20), 0).save(image_folder / "cat" / "blank.png")
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder)})
    assert_clean_failure(res, out, 1, "expect_column_values_to_be_between on std", "e.g. {")
    report = json.loads((tmp_path / "validation" / "report.json").read_text())
    assert report["success"] is False


def test_class_imbalance_beyond_tolerance_fails_validation(tmp_path, image_folder):
    for f in sorted((image_folder / "fox").iterdir())[3:]:
        f.unlink()
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder),
                                  "class_balance_tolerance": 0.3})
    assert_clean_failure(res, out, 1, "classes: expect_column_values_to_be_between on share")


def test_prepare_is_an_mlflow_run_and_a_refused_dataset_is_a_failed_one(tmp_path, idx_dir, image_folder,
                                                                          monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "ok").mkdir()
    ok, out = prepare(tmp_path / "ok", {"source": "fashion-mnist", "path": str(idx_dir)})
    assert ok.exit_code == 0, ok.output
    from PIL import Image

    Image.new("L", (20, 20), 0).save(image_folder / "cat" / "blank.png")
    (tmp_path / "bad").mkdir()
    bad, _ = prepare(tmp_path / "bad", {"source": "folder", "path": str(image_folder)})
    assert bad.exit_code == 1, bad.output

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("ganops").experiment_id],
                              filter_string="tags.`ganops.stage` = 'prepare'", order_by=["start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED"]
    done, failed = runs
    meta = json.loads((out / "meta.json").read_text())
    assert done.data.tags["ganops.data_hash"] == meta["content_hash"]
    assert done.data.params["data.source"] == "fashion-mnist"
    assert (done.data.metrics["train_images"], done.data.metrics["test_images"]) == (300, 100)
    report = json.loads((tmp_path / "ok" / "validation" / "report.json").read_text())
    assert done.data.metrics["expectations_passed"] == report["evaluated"]
    paths = {a.path for a in client.list_artifacts(done.info.run_id)}
    assert {"data_meta.json", "validation", "images"} <= paths, paths
    assert [a.path for a in client.list_artifacts(failed.info.run_id, "validation")] == ["validation/report.json"]


# ---------------------------------------------------------------- bad input: exit 2, one line


def _one_line(res) -> None:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output


def test_missing_path(tmp_path):
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(tmp_path / "nope")})
    assert_clean_failure(res, out, 2, "nope", "not found")
    _one_line(res)


def test_missing_file_in_idx_dir(tmp_path, idx_dir):
    (idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "t10k-labels-idx1-ubyte.gz", "not found")
    _one_line(res)


def test_truncated_gz(tmp_path, idx_dir):
    f = idx_dir / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:500])
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "train-images-idx3-ubyte.gz", "corrupt or truncated gzip")
    _one_line(res)


def test_corrupt_gz(tmp_path, idx_dir):
    (idx_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-bytes" * 10)
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "train-labels-idx1-ubyte.gz", "corrupt")
    _one_line(res)


def test_wrong_idx_magic(tmp_path, idx_dir):
    with gzip.open(idx_dir / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x03" + bytes(100))
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "t10k-images-idx3-ubyte.gz", "wrong IDX magic number")
    _one_line(res)


def test_image_label_count_mismatch(tmp_path, idx_dir):
    with gzip.open(idx_dir / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes(np.zeros(299, np.uint8)))
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "train-labels-idx1-ubyte.gz", "299 labels for 300 images")
    _one_line(res)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    res, out = prepare(tmp_path, {"source": "folder", "path": str(tmp_path / "empty")})
    assert_clean_failure(res, out, 2, "empty", "no images")
    _one_line(res)


def test_non_image_file_in_folder(tmp_path, image_folder):
    (image_folder / "dog" / "notes.txt").write_text("not an image")
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder)})
    assert_clean_failure(res, out, 2, "notes.txt", "not an image")
    _one_line(res)


def test_undecodable_png_in_folder(tmp_path, image_folder):
    (image_folder / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder)})
    assert_clean_failure(res, out, 2, "broken.png", "cannot decode image")
    _one_line(res)


def test_mixed_sizes_when_resize_is_off(tmp_path, image_folder):
    from PIL import Image

    Image.new("RGB", (24, 20), (9, 9, 9)).save(image_folder / "fox" / "wide.png")
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder), "resize": False})
    assert_clean_failure(res, out, 2, "wide.png", "24×20 differs from 20×20")
    _one_line(res)


def test_bad_param_value_is_one_clear_line(tmp_path, idx_dir):
    res, out = prepare(tmp_path, {"source": "imagenet", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "data.source", "imagenet")
    _one_line(res)


def test_download_offline_says_how_to_get_the_data(tmp_path, monkeypatch):
    # a proxy on a closed port makes the download fail fast even where a network exists
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    try:
        res, out = prepare(tmp_path, {"source": "mnist", "path": "unused", "download": True})
    finally:
        urllib.request.install_opener(None)  # urlopen's opener was built with the dead proxy: drop it
    assert_clean_failure(res, out, 2, "could not download mnist", "offline?")
    _one_line(res)


def test_failed_run_keeps_previous_output_untouched(tmp_path, idx_dir):
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert res.exit_code == 0
    before = (out / "meta.json").read_bytes()
    (idx_dir / "train-images-idx3-ubyte.gz").write_bytes(b"junk")
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert res.exit_code == 2
    assert (out / "meta.json").read_bytes() == before


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(DEBIAN_FASHION)})
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 60000, "test": 10000}
    assert meta["dedupe_removed"] == 0
    from ganops.data.prepared import load_split

    x, y = load_split(out, "test")
    assert tuple(x.shape) == (10000, 1, 28, 28)
    assert np.bincount(y.numpy()).tolist() == [1000] * 10


# ---------------------------------------------------------------- hostile source files and side files


def test_idx_header_promising_zero_images_or_extra_bytes_is_refused_naming_the_file(tmp_path, idx_dir):
    for stem, arr in (("t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8)),
                      ("t10k-labels-idx1-ubyte", np.zeros(0, np.uint8))):
        with gzip.open(idx_dir / f"{stem}.gz", "wb") as f:
            f.write(idx_bytes(arr))
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "t10k-images-idx3-ubyte.gz", "header says 0×28×28: no images")
    _one_line(res)
    with gzip.open(idx_dir / "t10k-images-idx3-ubyte.gz", "wb") as f:  # a body past the header's promise
        f.write(idx_bytes(np.zeros((100, 28, 28), np.uint8)) + bytes(10**6))
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert_clean_failure(res, out, 2, "t10k-images-idx3-ubyte.gz", "file holds more than 78400")


def write_1bit_png(path: Path, width: int, height: int) -> None:
    """A real, all-black 1-bit PNG of width×height: a few kB on disk, width·height pixels decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# PIL only warns (and decodes) at 144 MP, raises at 400 MP; with its limit switched off ganops still refuses
@pytest.mark.parametrize(("side", "pil_limit"), [(12_000, True), (20_000, True), (12_000, False)])
def test_a_decompression_bomb_in_a_folder_is_one_line_naming_it(tmp_path, image_folder, side, pil_limit,
                                                                  monkeypatch):
    from PIL import Image

    if not pil_limit:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    write_1bit_png(image_folder / "cat" / "bomb.png", side, side)
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder)})
    assert_clean_failure(res, out, 2, "bomb.png", "decompression bomb")
    _one_line(res)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_grayscale_pngs_are_scaled_to_8_bits_not_clipped(tmp_path, channels):
    from PIL import Image

    from ganops.data.prepared import SPLITS, load_split

    rng = np.random.default_rng(0)
    root, expected = tmp_path / "deep", set()
    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            a = rng.integers(0, 65536, size=(28, 28), dtype=np.uint16)
            if i == 0:  # a full-range gradient, as in the issue (became 99.5 % white)
                a[:] = np.linspace(0, 65535, 28).astype(np.uint16)[:: 1 - 2 * k]
            Image.fromarray(a).save(root / name / f"{i}.png")  # mode I;16: a real 16-bit PNG
            expected.add(np.repeat((a >> 8).astype(np.uint8)[None], channels, 0).tobytes())  # (C, H, W)
    res, out = prepare(tmp_path, {"source": "folder", "path": str(root), "channels": channels})
    assert res.exit_code == 0, res.output
    x = np.concatenate([load_split(out, s)[0].numpy() for s in SPLITS])  # (20, C, 28, 28)
    assert {img.tobytes() for img in x} == expected
    assert x.min() == 0 and x.max() == 255 and (x == 255).mean() < 0.01


def _odd_file(kind: str, d: Path) -> Path:
    from PIL import Image

    f = d / f"odd-{kind}.png"
    if kind == "zero-byte":
        f.write_bytes(b"")
    elif kind == "truncated":
        Image.fromarray(np.full((20, 20, 3), 99, np.uint8)).save(f)
        f.write_bytes(f.read_bytes()[:60])
    elif kind == "symlink-loop":
        f.symlink_to(f.name)
    elif kind == "dangling-symlink":
        f.symlink_to(d / "nowhere.png")
    elif kind == "fifo":  # open() would block until a writer came
        import os

        os.mkfifo(f)
    elif kind in ("float", "int32"):  # TIFF content under a .png name: PIL goes by content
        arr = np.linspace(0, 1, 400, dtype=np.float32) if kind == "float" else np.arange(400, dtype=np.int32) << 20
        Image.fromarray(arr.reshape(20, 20)).save(f, format="TIFF")
    return f


ODD = {"zero-byte": "cannot decode image", "truncated": "cannot decode image",
       "symlink-loop": "not a regular file", "dangling-symlink": "not a regular file", "fifo": "not a regular file",
       "float": "floating-point pixels (PIL mode F)", "int32": "32-bit integer pixels (PIL mode I)"}


@pytest.mark.parametrize("kind", list(ODD))
def test_odd_files_in_a_folder_are_one_line_naming_them(tmp_path, image_folder, kind):
    f = _odd_file(kind, image_folder / "dog")
    res, out = prepare(tmp_path, {"source": "folder", "path": str(image_folder)})
    assert_clean_failure(res, out, 2, f.name, ODD[kind])
    _one_line(res)
