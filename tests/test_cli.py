"""The `ganops` command itself: its version and the help users read for exit codes and options."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import ganops
from pipelines.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_version_prints_the_package_version_and_exits_0() -> None:
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "--version"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"ganops {ganops.__version__}", res.stderr


def test_promote_help_lists_its_exit_codes() -> None:
    res = runner.invoke(app, ["promote", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "Exit codes: 0 a decision was made" in text and "1 refused with --strict" in text and "2 error" in text


def test_sample_takes_the_count_as_n_or_num() -> None:
    res = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    assert "-n" in res.output and "--num" in res.output and "--n " not in res.output
