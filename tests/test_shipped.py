"""Shipped reference and floor (stats/shipped/): reused when data, network and protocol match, recomputed
when one byte of the data changes. Real prepare, real TF-Inception on a few images, a real MLflow store."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ganops.metrics import fid as fm
from ganops.metrics.registry import REF_FEATURES, compute_metrics, reference_subset
from ganops.metrics.shipped import find_floor, find_reference, floor_key, pack_reference
from pipelines.cli import app
from tests.conftest import write_idx_dataset

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
    path.write_bytes(b"not safetensors")  # an odd file in the directory is not a match, nor a crash
    assert find_reference(tmp_path, stats.meta, stats.n) is None


def test_a_shipped_floor_matches_only_its_key(tmp_path: Path) -> None:
    key = floor_key("abc", 100, 42, {"fid100": {"kind": "fid", "n_ref": 50}})
    doc = {"key": key, "floor": {"metrics": {"fid100": 3.0}}}
    (tmp_path / "floor-abc-100-42.json").write_text(json.dumps(doc))
    assert find_floor(tmp_path, key)[0] == doc["floor"]
    assert find_floor(tmp_path, floor_key("abc", 100, 42, {"fid100": {"kind": "fid", "n_ref": 51}})) is None
    (tmp_path / "floor-abc-100-42.json").write_text("{")
    assert find_floor(tmp_path, key) is None


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
