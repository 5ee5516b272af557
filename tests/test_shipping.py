"""What ships besides the code: Dockerfile (linted with hadolint), CI workflows, params profiles, README."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ganops.config import ConfigError
from ganops.profiles import apply_profile

REPO = Path(__file__).resolve().parents[1]


def test_dockerfile_lints_clean_and_runs_dvc_repro_as_non_root() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: it comes with the dev extra (pip install -e '.[dev]')"
    res = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'CMD ["dvc", "repro"]' in text and "dataset-fashion-mnist" in text and "torch==2.14.1" in text


def test_workflows_gate_gpu_training_on_promote_and_run_the_readme_tests_on_cpu() -> None:
    gpu = yaml.safe_load((REPO / ".github/workflows/gpu.yml").read_text())
    job = next(iter(gpu["jobs"].values()))
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    runs = [s.get("run", "") for s in job["steps"]]
    # the job's steps live in a script anyone can run (tests/test_team.py runs it against real remotes)
    i_job = next(i for i, r in enumerate(runs) if r.strip() == "bash .ci/train-and-gate.sh profiles/gpu.yaml")
    assert "if" not in job["steps"][i_job] and "continue-on-error" not in job["steps"][i_job]  # a refusal fails
    assert not any("dvc" in r and "|| true" in r for r in runs)  # no swallowed remote errors
    assert job["env"]["CI"] == "true" and "MLFLOW_TRACKING_URI" in job["env"]
    assert any(s.get("uses", "").startswith("actions/cache") and s["with"]["path"] == ".venv" for s in job["steps"])
    assert gpu["permissions"]["contents"] == "write"  # dvc exp push of the experiment's git ref
    header = (REPO / ".github/workflows/gpu.yml").read_text().split("\nname:")[0]
    assert "driver >= 580" in header and "CUDA 13" in header
    script = (REPO / ".ci/train-and-gate.sh").read_text()
    for step in ("dvc exp run", "dvc exp push", "dvc exp pull", "ganops promote --strict"):
        assert step in script
    assert "|| true" not in script and "ganops profile" in script
    cpu = yaml.safe_load((REPO / ".github/workflows/cpu.yml").read_text())
    assert any(s.get("run") == "bash setup.sh test" for j in cpu["jobs"].values() for s in j["steps"])


@pytest.mark.parametrize("profile", ["gpu", "smoke"])
def test_profiles_merge_into_params_and_validate(tmp_path: Path, profile: str) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    changed = apply_profile(params, REPO / f"profiles/{profile}.yaml", ["seed=7"])
    merged = yaml.safe_load(params.read_text())
    over = yaml.safe_load((REPO / f"profiles/{profile}.yaml").read_text())
    for section, values in over.items():
        for key, value in values.items():
            assert merged[section][key] == value and f"{section}.{key}" in changed
    assert merged["seed"] == 7 and merged["data"] == yaml.safe_load((REPO / "params.yaml").read_text())["data"]


def test_a_bad_profile_value_is_refused_and_params_left_alone(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_bytes()
    with pytest.raises(ConfigError, match="train.loss: must be one of"):
        apply_profile(params, None, ["train.loss=gan"])
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        apply_profile(params, None, ["trian.epochs=3"])
    assert params.read_bytes() == before


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["bash setup.sh repro", "bash setup.sh test"]
    assert "bash setup.sh test" in (REPO / ".ci/run").read_text()
