"""The `ganops` command itself: its version and the help users read for exit codes and options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ganops
from pipelines.cli import app
from tests.conftest import REPO
from tests.test_checkpoint import write as write_generator

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


@pytest.mark.parametrize(("option", "line"), [
    (["--nrow", "0"], "--nrow: must be >= 1, got 0"),  # was a ZeroDivisionError in the grid
    (["--nrow", "-3"], "--nrow: must be >= 1, got -3"),
    (["-n", "0"], "-n/--num: must be >= 1 and <= 4096, got 0"),
    (["--num", "5000"], "-n/--num: must be >= 1 and <= 4096, got 5000"),
    (["--seed", "-1"], "--seed: must be an integer in 0..2**63-1, got -1"),
    (["--seed", str(2**63)], "--seed: must be an integer in 0..2**63-1, got 9223372036854775808"),
    (["--seed", "9" * 30], "--seed: must be an integer in 0..2**63-1, got a 100-bit integer"),
])
def test_sample_refuses_a_size_or_seed_it_cannot_use_in_one_line(tmp_path: Path, option: list[str],
                                                                  line: str) -> None:
    gen = write_generator(tmp_path / "gen.pt")  # a real generator: the refusal is the option's, not the model's
    res = runner.invoke(app, ["sample", "--model", str(gen), "--out", str(tmp_path / "grid.png"), *option])
    assert res.exit_code == 2, res.output
    assert res.output.splitlines() == [f"error: {line}"], res.output
    assert not (tmp_path / "grid.png").exists()
