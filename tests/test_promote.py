"""The FID gate: the pure rule, then `ganops promote` against a real sqlite registry and a real `mlflow server`,
including 8 promotes started at once. Versions are real registry entries carrying the metric tags
`ganops evaluate` writes (the gate reads nothing else), so no generator needs training here."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ganops.config import PromoteConfig
from ganops.errors import GanopsError
from ganops.gate import Candidate, decide
from tests.conftest import git

REPO = Path(__file__).resolve().parents[1]
NAME = "gen"
CFG = PromoteConfig(model_name=NAME, max_fid=60.0, min_improvement=0.5, kid_sigmas=1.0)


def cand(version: str, fid: float, kid: float | None = None, std: float = 0.001, data: str = "d1",
         n: str = "10k") -> Candidate:
    metrics = {f"fid{n}": fid}
    if kid is not None:
        metrics |= {f"kid{n}": kid, f"kid{n}_std": std}
    return Candidate(version, metrics, data)


# ---- the rule ---------------------------------------------------------------------------------

def test_first_candidate_under_the_threshold_is_promoted_and_over_it_refused() -> None:
    assert decide(cand("1", 59.9), None, CFG).promote
    d = decide(cand("1", 60.1), None, CFG)
    assert not d.promote and "max_fid" in d.reason and d.figures["candidate_fid"] == 60.1


def test_a_challenger_must_beat_the_champion_by_more_than_the_margin() -> None:
    champ = cand("1", 30.0, kid=0.020)
    assert decide(cand("2", 25.0, kid=0.010), champ, CFG).promote
    d = decide(cand("2", 29.6, kid=0.010), champ, CFG)  # 0.4 better: within min_improvement
    assert not d.promote and "by more than 0.5" in d.reason


def test_equal_quality_within_kid_noise_does_not_flip_the_champion() -> None:
    champ = cand("1", 30.0, kid=0.0200, std=0.002)
    d = decide(cand("2", 29.0, kid=0.0190, std=0.002), champ, CFG)  # KID gain 0.001 < 1σ = 0.0028
    assert not d.promote and "within noise" in d.reason and d.figures["kid_noise"] == pytest.approx(0.002828, 1e-3)
    back = decide(champ, cand("2", 29.0, kid=0.0190, std=0.002), CFG)  # and the other way round
    assert not back.promote


def test_numbers_from_another_protocol_or_data_are_not_compared() -> None:
    assert "not comparable" in decide(cand("2", 10.0, n="2k"), cand("1", 30.0), CFG).reason
    assert "not comparable" in decide(cand("2", 10.0, data="d2"), cand("1", 30.0), CFG).reason


def test_a_mode_collapsed_candidate_is_refused_whatever_its_fid() -> None:
    def covered(version: str, fid: float, share: float) -> Candidate:
        c = cand(version, fid, kid=0.01)
        return Candidate(c.version, {**c.metrics, "judge/min_share_ratio": share}, c.data_hash)

    d = decide(covered("2", 10.0, 0.35), cand("1", 30.0, kid=0.02), CFG)  # far better FID, one class at 0.35
    assert not d.promote and "mode collapse" in d.reason and d.figures["min_share_ratio"] == 0.35
    with pytest.raises(GanopsError, match="min_share_ratio is nan"):  # not a share: an error, not a refusal
        decide(covered("1", 10.0, float("nan")), None, CFG)
    assert decide(covered("2", 10.0, 0.5), cand("1", 30.0, kid=0.02), CFG).promote  # exactly half: passes
    assert decide(covered("1", 10.0, 0.35), None, PromoteConfig(model_name=NAME, min_class_share=0.0)).promote
    assert decide(cand("1", 10.0), None, CFG).promote  # evaluated without a judge: the rule does not apply


def test_a_candidate_without_fid_is_an_error() -> None:
    with pytest.raises(GanopsError, match="expected one FID metric"):
        decide(Candidate("3", {"kid10k": 0.1}), None, CFG)


# ---- ganops promote against real registries ------------------------------------------------------

@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def make_repo(tmp_path: Path) -> Path:
    """A git repo with a params.yaml whose promote section is CFG's."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({
        "tracking": {"experiment": "t", "system_metrics": False},
        "promote": {"model_name": NAME, "max_fid": 60.0, "min_improvement": 0.5, "kid_sigmas": 1.0}}))
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    return root


def add_version(uri: str, fid: float, kid: float | None = None, std: float = 0.001,
                tags: dict[str, str] | None = None) -> str:
    """A registry version tagged like `ganops evaluate` tags one (`tags` added or overriding)."""
    mlflow.set_tracking_uri(uri)  # the sqlite registry resolves models:/m-... through the global URI
    client = MlflowClient(uri)
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    version_tags = {"metric.fid10k": str(fid), "ganops.data_hash": "d1"}
    if kid is not None:
        version_tags |= {"metric.kid10k": str(kid), "metric.kid10k_std": str(std)}
    version_tags |= tags or {}
    model = client.create_logged_model(experiment_id="0")  # a real (empty) model for the version to point at
    return str(client.create_model_version(NAME, source=f"models:/{model.model_id}", tags=version_tags,
                                           model_id=model.model_id).version)


def promote(repo: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "promote", "--params", "params.yaml",
                           "--out", "promote.json", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)


def champion(uri: str, alias: str = "champion") -> str | None:
    try:
        return str(MlflowClient(uri).get_model_version_by_alias(NAME, alias).version)
    except Exception:
        return None


def test_promote_moves_champion_only_for_a_clearly_better_candidate(repo: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    v1, v2, v3, v4, v5 = (add_version(uri, f, k) for f, k in
                          ((30.0, 0.020), (80.0, 0.090), (20.0, 0.010), (19.9, 0.0099), (10.0, 0.005)))
    res = promote(repo, uri, "--version", v1)
    assert res.returncode == 0, res.stderr
    assert champion(uri) == v1 and json.loads((repo / "promote.json").read_text())["decision"] == "promoted"

    res = promote(repo, uri, "--version", v2)  # over max_fid
    assert res.returncode == 1, res.stderr
    out = json.loads((repo / "promote.json").read_text())
    assert out["decision"] == "rejected" and out["champion_after"] == v1 and "max_fid" in out["reason"]
    tags = MlflowClient(uri).get_model_version(NAME, v2).tags
    assert tags["ganops.decision"] == "rejected" and "max_fid" in tags["ganops.decision_reason"]

    assert promote(repo, uri, "--version", v3).returncode == 0
    assert (champion(uri), champion(uri, "previous")) == (v3, v1)
    assert promote(repo, uri, "--version", v4).returncode == 1  # 0.1 better: noise
    assert champion(uri) == v3
    assert promote(repo, uri, "--version", v3).returncode == 0  # already champion: nothing to do

    dry = promote(repo, uri, "--version", v5, "--dry-run")
    assert dry.returncode == 0 and "would be promoted" in dry.stdout
    assert champion(uri) == v3 and "ganops.decision" not in MlflowClient(uri).get_model_version(NAME, v5).tags


@pytest.mark.parametrize("args, needle", [
    (("--candidate", "missing.json"), "missing.json: no candidate"),
    (("--version", "99"), "has no version 99"),
])
def test_errors_exit_2_with_one_line(repo: Path, tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    add_version(uri, 30.0)
    res = promote(repo, uri, *args)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_unreachable_store_and_missing_metric_exit_2(repo: Path, tmp_path: Path) -> None:
    res = promote(repo, "http://127.0.0.1:9", "--version", "1")
    assert res.returncode == 2 and "unreachable" in res.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    add_version(uri, 30.0)
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    model = client.create_logged_model("0")
    bare = str(client.create_model_version(NAME, source=f"models:/{model.model_id}", model_id=model.model_id).version)
    res = promote(repo, uri, "--version", bare)
    assert res.returncode == 2 and "expected one FID metric" in res.stderr
    assert champion(uri) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 with a sqlite backend."""
    port = _free_port()
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen([mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                             "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                             "--artifacts-destination", str(tmp_path / "server-artifacts")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 90 s")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_eight_concurrent_promotes_leave_one_champion_the_best_and_lose_no_version(
        repo: Path, tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db" if store == "sqlite" else request.getfixturevalue("mlflow_server")
    fids = [10.0 + 5 * i for i in range(8)]  # spaced well beyond min_improvement and KID noise
    random.Random(0).shuffle(fids)
    versions = {add_version(uri, f, kid=f / 1000, std=0.0005): f for f in fids}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", "promote", "--params", "params.yaml",
                               "--out", f"promote_{v}.json", "--version", v], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in versions]
    results = {v: (p.wait(timeout=600), p.stderr.read()) for v, p in zip(versions, procs, strict=True)}
    failed = {v: r for v, r in results.items() if r[0] not in (0, 1)}
    assert not failed, failed
    client = MlflowClient(uri)
    after = {str(mv.version): mv for mv in client.search_model_versions(f"name = '{NAME}'")}
    assert set(after) == set(versions)  # no version lost
    assert all(mv.tags.get("ganops.decision") in ("promoted", "rejected") for mv in after.values())
    # one champion, and it is the best: under the lock each decision saw the current champion, and the
    # FIDs differ by more than the margin, so only the minimum can survive
    assert champion(uri) == min(versions, key=versions.get)
    promoted = [v for v, (code, _) in results.items() if code == 0]
    assert champion(uri) in promoted and len(promoted) == sum(
        mv.tags["ganops.decision"] == "promoted" for mv in after.values())
    assert not client.search_registered_models(f"name = '{NAME}.lock'")  # the lock was released
