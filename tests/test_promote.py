"""The FID gate: the pure rule, then `ganops promote` against a real sqlite registry and a real `mlflow server`,
including 8 promotes started at once, and a promote killed (SIGTERM, SIGKILL) while holding the lock.
Versions are real registry entries carrying the metric tags `ganops evaluate` writes (the gate reads
nothing else), so no generator needs training here."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ganops.config import PromoteConfig
from ganops.errors import GanopsError
from ganops.gate import VersionRecord, should_promote
from ganops.provenance import pipeline_key
from ganops.tracking.promotion import (
    LOCK_TTL_S,
    LOCK_WAIT_S,
    TAG_LOCK_HOLDER,
    TAG_LOCK_PIDNS,
    TAG_LOCK_SINCE,
    _held,
    _pid_namespace,
    registry_lock,
)
from ganops.tracking.store import TrackingError
from tests.conftest import git

REPO = Path(__file__).resolve().parents[1]
NAME = "gen"
CFG = PromoteConfig(model_name=NAME, max_fid=60.0, min_improvement=0.5, kid_sigmas=1.0)


def cand(version: str, fid: float, kid: float | None = None, std: float = 0.001, data: str = "d1",
         n: str = "10k") -> VersionRecord:
    metrics = {f"fid{n}": fid}
    if kid is not None:
        metrics |= {f"kid{n}": kid, f"kid{n}_std": std}
    return VersionRecord(version, metrics, data)


# ---- the rule ---------------------------------------------------------------------------------

def test_first_candidate_under_the_threshold_is_promoted_and_over_it_refused() -> None:
    assert should_promote(cand("1", 59.9), None, CFG).promote
    d = should_promote(cand("1", 60.1), None, CFG)
    assert not d.promote and "max_fid" in d.reason and d.figures["candidate_fid"] == 60.1


def test_a_challenger_must_beat_the_champion_by_more_than_the_margin() -> None:
    champ = cand("1", 30.0, kid=0.020)
    assert should_promote(cand("2", 25.0, kid=0.010), champ, CFG).promote
    d = should_promote(cand("2", 29.6, kid=0.010), champ, CFG)  # 0.4 better: within min_improvement
    assert not d.promote and "by more than 0.5" in d.reason


def test_equal_quality_within_kid_noise_does_not_flip_the_champion() -> None:
    champ = cand("1", 30.0, kid=0.0200, std=0.002)
    d = should_promote(cand("2", 29.0, kid=0.0190, std=0.002), champ, CFG)  # KID gain 0.001 < 1σ = 0.0028
    assert not d.promote and "within noise" in d.reason and d.figures["kid_noise"] == pytest.approx(0.002828, 1e-3)
    back = should_promote(champ, cand("2", 29.0, kid=0.0190, std=0.002), CFG)  # and the other way round
    assert not back.promote


def test_numbers_from_another_protocol_or_data_are_not_compared() -> None:
    assert "not comparable" in should_promote(cand("2", 10.0, n="2k"), cand("1", 30.0), CFG).reason
    assert "not comparable" in should_promote(cand("2", 10.0, data="d2"), cand("1", 30.0), CFG).reason


def test_a_mode_collapsed_candidate_is_refused_whatever_its_fid() -> None:
    def covered(version: str, fid: float, share: float) -> VersionRecord:
        c = cand(version, fid, kid=0.01)
        return VersionRecord(c.version, {**c.metrics, "judge/min_share_ratio": share}, c.data_hash)

    d = should_promote(covered("2", 10.0, 0.35), cand("1", 30.0, kid=0.02), CFG)  # far better FID, one class at 0.35
    assert not d.promote and "mode collapse" in d.reason and d.figures["min_share_ratio"] == 0.35
    with pytest.raises(GanopsError, match="min_share_ratio is nan"):  # not a share: an error, not a refusal
        should_promote(covered("1", 10.0, float("nan")), None, CFG)
    assert should_promote(covered("2", 10.0, 0.5), cand("1", 30.0, kid=0.02), CFG).promote  # exactly half: passes
    assert should_promote(covered("1", 10.0, 0.35), None, PromoteConfig(model_name=NAME, min_class_share=0.0)).promote
    assert should_promote(cand("1", 10.0), None, CFG).promote  # evaluated without a judge: the rule does not apply


def test_a_candidate_without_fid_is_an_error() -> None:
    with pytest.raises(GanopsError, match="expected one FID metric"):
        should_promote(VersionRecord("3", {"kid10k": 0.1}), None, CFG)


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


def promote(repo: Path, uri: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "promote", "--params", "params.yaml",
                           "--out", "promote.json", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)


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

    res = promote(repo, uri, "--version", v2)  # over max_fid: refused, and a refusal is a decision (exit 0)
    assert res.returncode == 0, res.stderr
    assert json.loads((repo / "promote.json").read_text()) == {"decision": "refused"}
    out = json.loads((repo / "promote_detail.json").read_text())
    assert (out["candidate_version"], out["champion_after"]) == (v2, v1) and "max_fid" in out["reason"]
    tags = MlflowClient(uri).get_model_version(NAME, v2).tags
    assert tags["ganops.decision"] == "refused" and "max_fid" in tags["ganops.decision_reason"]
    strict = promote(repo, uri, "--version", v2, "--strict")  # CI's gate: a refusal fails the job
    assert strict.returncode == 1 and "refused" in strict.stdout, strict.stderr
    assert champion(uri) == v1

    assert promote(repo, uri, "--version", v3).returncode == 0
    assert (champion(uri), champion(uri, "previous")) == (v3, v1)
    assert promote(repo, uri, "--version", v4, "--strict").returncode == 1  # 0.1 better: noise
    assert champion(uri) == v3
    assert promote(repo, uri, "--version", v3).returncode == 0  # already champion: nothing to do

    dry = promote(repo, uri, "--version", v5, "--dry-run", "--strict")
    assert dry.returncode == 0 and "would be promoted" in dry.stdout
    dry = promote(repo, uri, "--version", v4, "--dry-run", "--strict")
    assert dry.returncode == 1 and "would be refused" in dry.stdout
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


def test_the_runs_pipeline_key_hashes_the_params_file_named_by_params(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key of `ganops promote --params other.yaml`'s run is other.yaml's (untracked, so only hashing
    the file itself tells the two apart), as the stage hands its --params to the run."""
    monkeypatch.delenv("GANOPS_PIPELINE_ID", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    v1 = add_version(uri, 30.0)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "other.yaml").write_text(yaml.safe_dump({**params, "promote": {**params["promote"], "max_fid": 50.0}}))
    assert promote(repo, uri, "--version", v1).returncode == 0
    other = subprocess.run([sys.executable, "-m", "pipelines.cli", "promote", "--params", "other.yaml",
                            "--version", v1, "--out", "promote.json"], cwd=repo, capture_output=True, text=True,
                           env={**os.environ, "MLFLOW_TRACKING_URI": uri}, timeout=300)
    assert other.returncode == 0, other.stderr

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`ganops.stage` = 'promote'",
                              order_by=["attributes.start_time ASC"])
    keys = [r.data.tags["ganops.pipeline"] for r in runs]
    assert keys == [pipeline_key(repo.resolve(), repo / name) for name in ("params.yaml", "other.yaml")]
    assert keys[0] != keys[1]


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


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_eight_concurrent_promotes_leave_one_champion_the_best_and_lose_no_version(
        repo: Path, tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    # two workers: concurrent requests reach two server processes, as behind a real deployment
    uri = f"sqlite:///{tmp_path}/mlflow.db" if store == "sqlite" else request.getfixturevalue("mlflow_server")(2).uri
    fids = [10.0 + 5 * i for i in range(8)]  # spaced well beyond min_improvement and KID noise
    random.Random(0).shuffle(fids)
    versions = {add_version(uri, f, kid=f / 1000, std=0.0005): f for f in fids}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", "promote", "--params", "params.yaml",
                               "--out", f"promote_{v}.json", "--version", v, "--strict"], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in versions]
    results = {v: (p.wait(timeout=600), p.stderr.read()) for v, p in zip(versions, procs, strict=True)}
    failed = {v: r for v, r in results.items() if r[0] not in (0, 1)}
    assert not failed, failed
    client = MlflowClient(uri)
    after = {str(mv.version): mv for mv in client.search_model_versions(f"name = '{NAME}'")}
    assert set(after) == set(versions)  # no version lost
    assert all(mv.tags.get("ganops.decision") in ("promoted", "refused") for mv in after.values())
    # one champion, and it is the best: under the lock each decision saw the current champion, and the
    # FIDs differ by more than the margin, so only the minimum can survive
    assert champion(uri) == min(versions, key=versions.get)
    promoted = [v for v, (code, _) in results.items() if code == 0]
    assert champion(uri) in promoted and len(promoted) == sum(
        mv.tags["ganops.decision"] == "promoted" for mv in after.values())
    assert not client.search_registered_models(f"name = '{NAME}.lock'")  # the lock was released


# ---- a promote killed while holding the lock ------------------------------------------------------

HOLDER = Path(__file__).with_name("lock_holder.py")
QUICK_S = LOCK_WAIT_S / 2  # a promote that finished within this did not wait the lock out


def hold_lock(uri: str) -> subprocess.Popen:
    """A real process holding the promotion lock of NAME (tests/lock_holder.py), once it says so."""
    proc = subprocess.Popen([sys.executable, str(HOLDER), uri, NAME], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("locked"), line
    assert lock_models(uri) == [f"{NAME}.lock"]
    return proc


def lock_models(uri: str) -> list[str]:
    """The lock and any break markers (`<lock>.break-...`) in the registry."""
    return sorted(m.name for m in MlflowClient(uri).search_registered_models(f"name LIKE '{NAME}.lock%'"))


def test_sigterm_while_holding_the_lock_releases_it(repo: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    v1 = add_version(uri, 30.0)
    proc = hold_lock(uri)
    proc.send_signal(signal.SIGTERM)  # what CI runners and Kubernetes send
    assert proc.wait(timeout=60) == 130  # handled, not killed by the signal
    assert lock_models(uri) == []
    res = promote(repo, uri, "--version", v1, timeout=QUICK_S)
    assert res.returncode == 0, res.stderr
    assert champion(uri) == v1


def test_a_sigkilled_holders_lock_is_broken_by_the_next_promote(repo: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    v1 = add_version(uri, 30.0)
    proc = hold_lock(uri)
    proc.kill()
    proc.wait(timeout=60)
    assert lock_models(uri) == [f"{NAME}.lock"]  # left behind: SIGKILL cannot be handled
    res = promote(repo, uri, "--version", v1, timeout=QUICK_S)
    assert res.returncode == 0, res.stderr
    assert "broke the stale lock" in res.stderr and f":{proc.pid}:" in res.stderr and "has ended" in res.stderr
    assert champion(uri) == v1 and lock_models(uri) == []


def test_a_lock_from_another_host_is_respected_until_it_expires(repo: Path, tmp_path: Path) -> None:
    assert LOCK_TTL_S < LOCK_WAIT_S  # so a lock left on another host expires within one wait
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    v1 = add_version(uri, 30.0)
    client = MlflowClient(uri)
    client.create_registered_model(f"{NAME}.lock", tags={TAG_LOCK_HOLDER: "elsewhere:1:abcd1234",
                                                         TAG_LOCK_SINCE: str(time.time())})
    with pytest.raises(TrackingError, match="still held after 1 s by elsewhere:1:abcd1234"):
        with registry_lock(uri, NAME, wait_s=1):  # its pid means nothing here: wait
            pass
    client.set_registered_model_tag(f"{NAME}.lock", TAG_LOCK_SINCE, str(time.time() - LOCK_TTL_S - 5))
    res = promote(repo, uri, "--version", v1, timeout=QUICK_S)
    assert res.returncode == 0, res.stderr
    assert "broke the stale lock" in res.stderr and "elsewhere:1:abcd1234" in res.stderr and "older" in res.stderr
    assert champion(uri) == v1 and lock_models(uri) == []


def test_eight_promotes_facing_a_dead_holders_lock_break_it_once_and_leave_one_champion(
        repo: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    fids = [10.0 + 5 * i for i in range(8)]
    random.Random(1).shuffle(fids)
    versions = {add_version(uri, f, kid=f / 1000, std=0.0005): f for f in fids}
    holder = hold_lock(uri)
    holder.kill()
    holder.wait(timeout=60)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", "promote", "--params", "params.yaml",
                               "--out", f"promote_{v}.json", "--version", v, "--strict"], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in versions]
    results = {v: (p.wait(timeout=600), p.stderr.read()) for v, p in zip(versions, procs, strict=True)}
    assert not {v: r for v, r in results.items() if r[0] not in (0, 1)}
    # exactly one of them deleted the dead holder's lock: the others found the break marker taken or,
    # later, a live holder
    assert sum(err.count("broke the stale lock") for _, err in results.values()) == 1
    assert champion(uri) == min(versions, key=versions.get) and lock_models(uri) == []


def test_a_breaker_killed_mid_break_does_not_block_the_lock(tmp_path: Path) -> None:
    """A waiter SIGKILLed between taking the break marker and deleting the stale lock leaves both behind:
    the next waiter breaks the marker (its holder is gone too), then the lock."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid, here = int(dead.stdout), socket.gethostname()
    client = MlflowClient(uri)
    lock = f"{NAME}.lock"
    tags = {TAG_LOCK_SINCE: str(time.time()), TAG_LOCK_PIDNS: _pid_namespace()}
    client.create_registered_model(lock, tags={TAG_LOCK_HOLDER: f"{here}:{pid}:aaaa1111", **tags})
    held = _held(client, lock)
    assert held is not None
    client.create_registered_model(f"{lock}.break-{held.key}", tags={TAG_LOCK_HOLDER: f"{here}:{pid}:bbbb2222", **tags})
    lines: list[str] = []
    with registry_lock(uri, NAME, wait_s=60, notify=lines.append):
        assert _held(client, lock) is not None and lock_models(uri) == [lock]
    assert len(lines) == 2 and ".break-" in lines[0] and "bbbb2222" in lines[0] and "aaaa1111" in lines[1]
    assert lock_models(uri) == []
