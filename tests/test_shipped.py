"""Shipped reference and floor (stats/shipped/): reused when data, network and protocol match and the contents
still hash to their digest, recomputed when one byte of the data changes or the file was edited. Real prepare,
real TF-Inception on a few images, a real MLflow store."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from safetensors.numpy import save_file
from typer.testing import CliRunner

from ganops.config import EvaluateConfig
from ganops.errors import GanopsWarning
from ganops.metrics import fid as fm
from ganops.metrics.floor import floor_protocols
from ganops.metrics.names import MetricName, metric_kinds
from ganops.metrics.precomputed import find_floor, find_reference, floor_key, pack_floor, pack_reference
from ganops.metrics.reference import REF_FEATURES, reference_meta, reference_subset
from ganops.metrics.registry import compute_metrics
from ganops.params import load_section
from pipelines.cli import app
from tests.conftest import REPO, write_idx_dataset

runner = CliRunner()
N, N_TEST = 24, 40  # floor and reference sizes: a few seconds of Inception


def invoke(*args: str):
    return runner.invoke(app, [*args, "--params", "params.yaml"])


def stages(root: Path, tag: str) -> dict[str, str]:
    """prepare → reference → floor into files suffixed `tag`; their outputs by name."""
    for args in (("prepare", "--out", f"prepared{tag}", "--validation", f"validation{tag}"),
                 ("reference", "--data", f"prepared{tag}", "--out", f"ref{tag}.safetensors"),
                 ("floor", "--data", f"prepared{tag}", "--reference", f"ref{tag}.safetensors",
                  "--metrics", f"floor{tag}.json")):
        res = invoke(*args)
        assert res.exit_code == 0, (args[0], res.output)
        yield args[0], res.output


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_idx_dataset(tmp_path / "idx", n_train=60, n_test=N_TEST)
    params = {"seed": 5, "tracking": {"experiment": "t", "system_metrics": False},
              "data": {"source": "fashion-mnist", "path": str(tmp_path / "idx")},
              "evaluate": {"num_samples": N, "metrics": ["fid", "kid"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


def test_shipped_results_are_reused_byte_for_byte_and_a_changed_byte_recomputes(ws: Path) -> None:
    first = dict(stages(ws, "1"))
    assert "computed" in first["reference"] and "computed" in first["floor"]
    res = runner.invoke(app, ["ship-stats", "--reference", "ref1.safetensors", "--floor", "floor1_detail.json"])
    assert res.exit_code == 0, res.output
    assert len(list((ws / "stats/shipped").iterdir())) == 2

    second = dict(stages(ws, "2"))  # same data: both come from stats/shipped, no Inception
    assert "reused stats/shipped/reference-test-" in second["reference"], second["reference"]
    assert "reused stats/shipped/floor-" in second["floor"], second["floor"]
    assert "warning:" not in second["reference"] + second["floor"]  # intact files pass their digests
    for a, b in (("ref1.safetensors", "ref2.safetensors"), ("floor1.json", "floor2.json"),
                 ("floor1_detail.json", "floor2_detail.json")):
        assert (ws / a).read_bytes() == (ws / b).read_bytes(), a

    # one byte of one test image changes: a new content hash, so both are computed again
    path = ws / "idx/t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[16 + 28 * 14 + 14] ^= 0xFF  # image 0, centre pixel
    path.write_bytes(gzip.compress(bytes(raw)))
    third = dict(stages(ws, "3"))
    assert "computed" in third["reference"] and "computed" in third["floor"], third
    assert (ws / "ref3.safetensors").read_bytes() != (ws / "ref1.safetensors").read_bytes()


def test_a_seed_or_n_the_shipped_floor_was_not_made_with_recomputes(ws: Path) -> None:
    dict(stages(ws, "1"))
    assert runner.invoke(app, ["ship-stats", "--reference", "ref1.safetensors",
                               "--floor", "floor1_detail.json"]).exit_code == 0
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["seed"] = 6
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    out = dict(stages(ws, "2"))
    assert "reused" in out["reference"] and "computed" in out["floor"], out  # the reference has no seed


def edit_array(path: Path, name: str, fn) -> None:
    """One array of a shipped reference replaced by fn(array); its header (key and digest) left as it was."""
    with safe_open(str(path), framework="np") as f:
        metadata, arrays = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(arrays | {name: fn(arrays[name])}, str(path), metadata=metadata)


def shift_means(path: Path, by: float = 0.5) -> None:
    edit_array(path, "mu", lambda mu: mu + by)


def one_ulp(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[0] = np.nextafter(a.flat[0], np.inf)
    return a


def set_floor_fid(path: Path, fid: float) -> None:
    """A shipped floor's FID edited by hand (key and digest left as they were)."""
    doc = json.loads(path.read_text())
    (name,) = [k for k in doc["floor"]["metrics"] if k.startswith("fid")]
    doc["floor"]["metrics"][name] = fid
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def warning_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


def test_an_edited_shipped_reference_or_floor_is_named_once_and_computed_instead(ws: Path) -> None:
    dict(stages(ws, "1"))
    assert runner.invoke(app, ["ship-stats", "--reference", "ref1.safetensors",
                               "--floor", "floor1_detail.json"]).exit_code == 0
    (ref,) = (ws / "stats/shipped").glob("reference-*.safetensors")
    (floor,) = (ws / "stats/shipped").glob("floor-*.json")
    shift_means(ref, 0.5)  # a wrong reference would make every FID wrong
    set_floor_fid(floor, 0.001)  # a floor no generator is measured against honestly

    out = dict(stages(ws, "2"))
    for stage, path in (("reference", ref), ("floor", floor)):
        assert warning_lines(out[stage]) == [f"warning: stats/shipped/{path.name}: contents do not match its "
                                             "digest (edited or damaged); computing instead"], out[stage]
        assert "computed" in out[stage] and "reused" not in out[stage], out[stage]
    # what was computed is what the first run computed, not the edited files' numbers
    for a, b in (("ref1.safetensors", "ref2.safetensors"), ("floor1_detail.json", "floor2_detail.json")):
        assert (ws / a).read_bytes() == (ws / b).read_bytes(), a
    assert json.loads((ws / "floor2.json").read_text())["floor/fid24"] != 0.001


def test_a_prepared_split_edited_after_prepare_is_refused_not_taken_for_its_hash(ws: Path) -> None:
    """The shipped files' key is the prepared data's content hash: a split whose bytes are no longer the ones
    meta.json hashed (or a meta.json whose hash was changed by hand) would borrow results made from other data."""
    res = invoke("prepare", "--out", "prepared", "--validation", "validation")
    assert res.exit_code == 0, res.output
    split, meta = ws / "prepared/test.safetensors", ws / "prepared/meta.json"
    pristine = split.read_bytes(), meta.read_bytes()
    with safe_open(str(split), framework="np") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    arrays["images"][0, 0, 14, 14] ^= 0xFF  # one pixel of one test image
    save_file(arrays, str(split))
    res = invoke("reference", "--data", "prepared", "--out", "ref.safetensors")
    assert res.exit_code == 2, res.output
    assert res.output.splitlines() == ["error: prepared/test.safetensors: contents do not match the sha256 in "
                                       "prepared/meta.json (edited or damaged); rerun `ganops prepare` (or "
                                       "`dvc checkout data/prepared`)"], res.output
    split.write_bytes(pristine[0])
    meta.write_text(meta.read_text().replace(json.loads(pristine[1])["content_hash"], "e7f6cb6f49a96ef9"))
    res = invoke("reference", "--data", "prepared", "--out", "ref.safetensors")
    assert res.exit_code == 2 and res.output.startswith("error: prepared/meta.json: content_hash is not the hash"), \
        res.output
    assert not (ws / "ref.safetensors").exists()


def _stats(n: int = 30, d: int = 6, **meta) -> fm.FeatureStats:
    feats = np.random.default_rng(0).random((n, d)).astype(np.float32)
    base = {"split": "test", "source_hash": "abc", "network_sha1": "s1", "resize": "r"}
    stats = fm.FeatureStats.from_features(feats, meta=base | meta)
    return fm.FeatureStats(stats.mu, stats.sigma, stats.n, stats.meta, feats[reference_subset(n)])


def test_a_shipped_reference_matches_only_its_own_header(tmp_path: Path) -> None:
    stats = _stats()
    pack_reference(stats, tmp_path)
    got, _ = find_reference(tmp_path, stats.meta, stats.n)
    assert np.array_equal(got.sigma, stats.sigma) and np.array_equal(got.mu, stats.mu)
    assert np.array_equal(got.features, stats.features) and got.meta == stats.meta
    assert find_reference(tmp_path, stats.meta | {"network_sha1": "other"}, stats.n) is None
    assert find_reference(tmp_path, stats.meta | {"resize": "nearest"}, stats.n) is None
    assert find_reference(tmp_path, stats.meta, stats.n + 1) is None
    assert find_reference(tmp_path / "missing", stats.meta, stats.n) is None
    path = next(tmp_path.iterdir())
    path.write_bytes(b"not safetensors")  # a damaged file is not a match, nor a crash: it is named
    with pytest.warns(GanopsWarning, match=f"^{path}: not a readable precomputed reference .*; computing instead$"):
        assert find_reference(tmp_path, stats.meta, stats.n) is None


def test_a_shipped_reference_is_reused_only_while_its_contents_match_its_digest(tmp_path: Path) -> None:
    stats = _stats()
    path = pack_reference(stats, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact file: no warning
        assert find_reference(tmp_path, stats.meta, stats.n) is not None
    pristine = path.read_bytes()
    for damage in (lambda: shift_means(path, 0.5), lambda: edit_array(path, "features", one_ulp),
                   lambda: edit_array(path, "sigma_triu", one_ulp)):
        damage()
        with pytest.warns(GanopsWarning) as said:
            assert find_reference(tmp_path, stats.meta, stats.n) is None
        assert [str(w.message) for w in said] == [f"{path}: contents do not match its digest (edited or damaged); "
                                                  "computing instead"]
        path.write_bytes(pristine)
    # the header is under the digest too: a file relabelled for another network does not pass as made by it
    with safe_open(str(path), framework="np") as f:
        header, arrays = json.loads(f.metadata()["ganops"]), {k: f.get_tensor(k) for k in f.keys()}
    save_file(arrays, str(path), metadata={"ganops": json.dumps(header | {"network_sha1": "other"})})
    with pytest.warns(GanopsWarning, match="contents do not match its digest"):
        assert find_reference(tmp_path, stats.meta | {"network_sha1": "other"}, stats.n) is None
    # a file shipped before digests: computed, and said how to fix it
    header.pop("digest")
    save_file(arrays, str(path), metadata={"ganops": json.dumps(header)})
    with pytest.warns(GanopsWarning, match=r"has no digest .*re-ship it with `ganops ship-stats`\); computing"):
        assert find_reference(tmp_path, stats.meta, stats.n) is None


def test_a_shipped_floor_matches_only_its_key_and_its_digest(tmp_path: Path) -> None:
    protocol = {"fid100": {"kind": "fid", "n_ref": 50}}
    record = {"metrics": {"fid100": 3.0}, "n": 100, "seed": 42, "protocol": protocol}
    path = pack_floor(record, "abc", tmp_path)
    key = floor_key("abc", 100, 42, protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_floor(tmp_path, key) == (record, path)
        assert find_floor(tmp_path, floor_key("abc", 100, 42, {"fid100": {"kind": "fid", "n_ref": 51}})) is None
    pristine = path.read_text()
    set_floor_fid(path, 0.001)
    with pytest.warns(GanopsWarning, match=f"^{path}: contents do not match its digest .*; computing instead$"):
        assert find_floor(tmp_path, key) is None
    doc = json.loads(pristine)
    doc.pop("digest")
    path.write_text(json.dumps(doc))
    with pytest.warns(GanopsWarning, match="has no digest"):
        assert find_floor(tmp_path, key) is None
    path.write_text("{")
    with pytest.warns(GanopsWarning, match="not a readable precomputed floor"):
        assert find_floor(tmp_path, key) is None


def test_the_committed_shipped_files_pass_their_digests_for_the_default_params() -> None:
    """A fresh clone reuses stats/shipped/ for the default data and params.yaml: the keys the stages would
    compute find both files, and both still hash to their digests (no warning)."""
    shipped = REPO / "stats/shipped"
    (ref_path,) = shipped.glob("reference-test-*.safetensors")
    source_hash = ref_path.stem.rsplit("-", 1)[1]
    committed_run = json.loads((REPO / "metrics/floor_detail.json").read_text())["protocol"]
    assert {p["ref_source_hash"] for p in committed_run.values()} == {source_hash}  # the default data's
    cfg = load_section(REPO / "params.yaml", "evaluate", EvaluateConfig, choices={"metrics": metric_kinds()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hit = find_reference(shipped, reference_meta("test", source_hash), 10_000)  # Fashion-MNIST's test split
        assert hit is not None and hit[1] == ref_path
        ref = hit[0]
        names = [str(MetricName(k, cfg.num_samples)) for k in cfg.metrics]
        key = floor_key(source_hash, cfg.num_samples, cfg.seed, floor_protocols(names, ref, cfg.seed))
        floor = find_floor(shipped, key)
    assert floor is not None and floor[0] == json.loads((REPO / "metrics/floor_detail.json").read_text())
    assert np.array_equal(ref.sigma, ref.sigma.T) and ref.features.shape == (REF_FEATURES, ref.dim)


def test_kid_and_pr_see_a_fixed_subset_of_a_large_reference_and_say_so() -> None:
    idx = reference_subset(10_000)
    assert len(idx) == REF_FEATURES and np.array_equal(idx, np.sort(idx)) and len(set(idx)) == REF_FEATURES
    assert np.array_equal(idx, reference_subset(10_000))  # a protocol constant, not the run's seed
    assert np.array_equal(reference_subset(50), np.arange(50))
    ref = _stats(n=40, network_sha1=None, resize=None)
    from ganops.metrics.inception import NETWORK_SHA1, RESIZE

    ref = fm.FeatureStats(ref.mu, ref.sigma, ref.n, ref.meta | {"network_sha1": NETWORK_SHA1, "resize": RESIZE},
                          ref.features[:25])
    out = compute_metrics(["kid30"], np.random.default_rng(1).random((30, 6)), ref)
    assert out["kid30"]["protocol"]["n_ref"] == 40 and out["kid30"]["protocol"]["n_ref_features"] == 25
    assert out["kid30"]["protocol"]["subset_size"] == 25
