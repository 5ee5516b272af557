"""The team path's settings, each small and fast (tests/test_team.py runs them together against real servers):
the container's paths against the store's defaults, a blank or new store said out loud, the CI gate that refuses
a local store, the experiment name and the user, and what counts as a dirty tree in a DVC experiment."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from ganops.provenance import git_dirty
from ganops.tracking import experiment_name, is_local_store, resolve_tracking_uri
from ganops.tracking.store import artifact_root, get_or_create_experiment
from pipelines.cli import app
from tests.conftest import git, write_params

REPO = Path(__file__).resolve().parents[1]


def dockerfile() -> tuple[dict[str, str], list[str], str]:
    """The Dockerfile's ENV values, VOLUMEs and WORKDIR."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    volumes = [v for line in re.findall(r"^VOLUME (.+)$", text, re.M) for v in yaml.safe_load(line)]
    return env, volumes, re.findall(r"^WORKDIR (\S+)$", text, re.M)[-1]


def docker_context(paths: list[str]) -> set[str]:
    """Which of `paths` .dockerignore lets into the build context (its rules in order, `!` re-includes; a rule
    names a path or a directory above it)."""
    rules = [r.strip() for r in (REPO / ".dockerignore").read_text().splitlines() if r.strip() and r[0] != "#"]
    kept = set()
    for path in paths:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        inside = True
        for rule in rules:
            neg, pat = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            names = parts if pat.startswith("**/") else prefixes  # **/x: x at any depth
            if any(fnmatch.fnmatch(n, pat.removeprefix("**/")) for n in names):
                inside = neg
        if inside:
            kept.add(path)
    return kept


def test_the_image_keeps_store_artifacts_and_outbox_on_its_volume_and_no_secret_in_its_context() -> None:
    env, volumes, workdir = dockerfile()
    uri = env["MLFLOW_TRACKING_URI"]
    assert uri.startswith("sqlite:////") and resolve_tracking_uri(REPO) != uri  # the image sets it; we default
    db = Path(uri.removeprefix("sqlite:///"))
    on_volume = [v for v in volumes if db.is_relative_to(v)]
    assert on_volume, f"{db} is not on a VOLUME {volumes}: the registry would die with the container"
    # the store's own rule puts artifacts beside the database: on the same volume
    assert artifact_root(uri, Path(workdir)).is_relative_to(on_volume[0])
    assert Path(env["GANOPS_OUTBOX"]).is_relative_to(on_volume[0])
    # the workspace is the mounted clone, and its code is what runs
    assert workdir == "/work" and env["PYTHONPATH"].split(":")[0] == f"{workdir}/src"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True).stdout.split()
    secrets = [".dvc/config.local", ".env", "mlflow.db", ".dvc/cache/files/md5/ab/cd", ".venv/bin/python"]
    kept = docker_context(tracked + secrets)
    assert not kept & set(secrets), kept & set(secrets)
    assert {"pyproject.toml", "README.md", "src/ganops/config.py", "pipelines/cli.py"} <= kept


def test_the_image_settings_outside_a_container(tmp_path: Path, idx_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                empty_store: Path) -> None:
    """The image's environment with its absolute paths re-rooted under tmp_path: a stage's run, its artifacts
    and the store all land on the "volume", the outputs in the "mounted clone"."""
    env, volumes, workdir = dockerfile()
    root = lambda p: tmp_path / p.lstrip("/")  # noqa: E731
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root(env['MLFLOW_TRACKING_URI'].removeprefix('sqlite:///'))}")
    monkeypatch.setenv("GANOPS_OUTBOX", str(root(env["GANOPS_OUTBOX"])))
    root("/mlflow").mkdir()
    work = root(workdir)
    work.mkdir()
    monkeypatch.chdir(work)
    params = write_params(work / "params.yaml", {"source": "fashion-mnist", "path": str(idx_dir)},
                          extra="tracking:\n  system_metrics: false\n")
    res = CliRunner().invoke(app, ["prepare", "--params", str(params), "--out", "data/prepared", "--raw", "data/raw",
                                   "--validation", "data/validation"])
    assert res.exit_code == 0, res.output
    assert "creating a new, empty one" in res.output  # the first use of the volume's store is said
    assert (work / "data/prepared/meta.json").is_file() and (root("/mlflow") / "mlflow.db").is_file()
    client = MlflowClient(resolve_tracking_uri(work))
    (run,) = client.search_runs([client.get_experiment_by_name("ganops").experiment_id],
                                "tags.`ganops.stage` = 'prepare'")
    assert run.info.artifact_uri.startswith((root("/mlflow") / "mlartifacts").as_uri())
    assert (root("/mlflow") / "mlartifacts").is_dir() and not (work / "mlartifacts").exists()


def test_a_blank_tracking_uri_is_unset_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")
    assert resolve_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    (tmp_path / "params.yaml").write_text("promote:\n  model_name: g\n")
    res = CliRunner().invoke(app, ["promote", "--version", "1", "--dry-run"])
    assert "warning: MLFLOW_TRACKING_URI is set but empty: treated as unset" in res.output, res.output
    assert "creating a new, empty one" in res.output and "has no version 1" in res.output


@pytest.mark.parametrize("uri, local", [("sqlite:///x/mlflow.db", True), ("./mlruns", True), ("file:///m", True),
                                        ("http://10.0.0.1:5000", False), ("https://mlflow.team", False),
                                        ("databricks", False), ("postgresql://u@db/mlflow", False)])
def test_which_stores_are_local(uri: str, local: bool) -> None:
    assert is_local_store(uri) is local


def test_under_ci_the_strict_gate_refuses_a_local_store_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    empty_store: Path) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "params.yaml").write_text("promote:\n  model_name: g\n")
    (tmp_path / "candidate.json").write_text('{"registered": true, "name": "g", "version": "1"}')
    args = ["promote", "--strict", "--candidate", "candidate.json", "--out", "p.json"]
    ci = CliRunner().invoke(app, args, env={"CI": "true"})
    assert ci.exit_code == 2 and ci.output.count("\n") == 1, ci.output
    assert ci.output.startswith("error: CI=true: the gate would judge the local store sqlite:///")
    assert not (tmp_path / "p.json").exists()
    # told, or not in CI: it goes on to judge (and here finds no version 1: its own error, not the refusal)
    for extra, env in ((["--allow-local-store"], {"CI": "true"}), ([], {"CI": ""}), (["--dry-run"], {})):
        res = CliRunner().invoke(app, args + extra, env=env)
        assert res.exit_code == 2 and "has no version 1" in res.output, res.output


def test_the_experiment_name_and_where_runs_log_are_no_stage_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert experiment_name("ganops") == "ganops"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "alice-scratch")
    assert experiment_name("ganops") == "alice-scratch"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", " ")
    assert experiment_name("ganops") == "ganops"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        params = [p for p in stage.get("params", []) if isinstance(p, str)]
        assert not [p for p in params if p.split(".")[0] == "tracking"], f"stage {name} depends on tracking"


def test_a_dvc_experiments_params_do_not_make_the_tree_dirty_but_code_does(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "model.py").write_text("W = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "init")
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert git_dirty(tmp_path) == "true"  # a plain edit of params.yaml: dirty
    monkeypatch.setenv("DVC_EXP_NAME", "gpu-1234")
    assert git_dirty(tmp_path) == "false"  # DVC commits it into the experiment the run is tagged with
    (tmp_path / "model.py").write_text("W = 2\n")
    assert git_dirty(tmp_path) == "true"  # code is never excused


def test_an_experiment_on_a_sqlite_volume_keeps_artifacts_beside_the_database(tmp_path: Path) -> None:
    vol = tmp_path / "volume"
    vol.mkdir()
    uri = f"sqlite:///{vol}/mlflow.db"
    exp = MlflowClient(uri).get_experiment(get_or_create_experiment("e x", tmp_path / "repo", tracking_uri=uri))
    assert exp.artifact_location == (vol / "mlartifacts" / "e_x").as_uri()


def test_the_job_script_refuses_bad_use_with_exit_2(tmp_path: Path) -> None:
    job = str(REPO / ".ci/train-and-gate.sh")
    res = subprocess.run(["bash", job, "no/such/profile.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "usage:" in res.stderr
    res = subprocess.run(["bash", job, "profiles/smoke.yaml", "train.epochs=1"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert res.returncode == 2 and "only -S key=value" in res.stderr, res.stderr


def test_reading_commands_name_a_missing_local_store_instead_of_creating_it(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/typo.db")
    for args in (["sample", "--model", "models:/g@champion", "--out", "g.png"], ["lineage", "models:/g@champion"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and res.output.startswith(f"error: no MLflow store at {tmp_path}/typo.db"), res.output
        assert not (tmp_path / "typo.db").exists() and not (tmp_path / "g.png").exists()
