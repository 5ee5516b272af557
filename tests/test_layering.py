"""The package's layering: runtime, models, metrics and data sit below the training loops, and only
`ganops.tracking` talks to MLflow. Read off the source (every import, function-level ones too) and checked
again in a fresh interpreter, so a lazy import cannot hide an upward arrow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ganops"
BELOW_TRAINING = ("models", "metrics", "data")


def _imports(path: Path, root: Path = SRC) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved against its package)."""
    pkg = ".".join(("ganops", *path.relative_to(root).with_suffix("").parts[:-1]))
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _offenders(packages: tuple[str, ...], banned: str, root: Path = SRC) -> list[str]:
    return [f"{p.relative_to(root)} imports {m}" for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
            for m in sorted(_imports(p, root)) if m == banned or m.startswith(banned + ".")]


def test_models_metrics_data_never_import_training() -> None:
    assert _offenders(BELOW_TRAINING, "ganops.training") == []
    assert "ganops.training" not in " ".join(_imports(SRC / "runtime.py"))


def test_the_check_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """_imports must catch the lazy imports an upward arrow would hide in (as models/shipped.py once did)."""
    root = tmp_path / "ganops"
    (root / "models").mkdir(parents=True)
    probe = root / "models" / "_layering_probe.py"
    probe.write_text("def f():\n    from ganops.training.common import NullSink\n    from ..training import gan\n")
    found = _offenders(("models",), "ganops.training", root)
    assert found == ["models/_layering_probe.py imports ganops.training",
                     "models/_layering_probe.py imports ganops.training.common",
                     "models/_layering_probe.py imports ganops.training.common.NullSink",
                     "models/_layering_probe.py imports ganops.training.gan"]


@pytest.mark.parametrize("module", ["ganops.models", "ganops.metrics", "ganops.data", "ganops.runtime",
                                    "ganops.models.seeded_samples", "ganops.models.generator", "ganops.metrics.judge",
                                    "ganops.metrics.evaluation"])
def test_importing_a_lower_layer_loads_no_training_module(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('ganops.training')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=SRC.parents[1], env={"PYTHONPATH": str(SRC.parent), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_only_tracking_imports_mlflow() -> None:
    others = [p for p in SRC.iterdir() if p.name != "tracking" and (p.is_dir() or p.suffix == ".py")]
    bad = [f"{p.relative_to(SRC)} imports {m}" for top in others
           for p in ([top] if top.is_file() else sorted(top.rglob("*.py")))
           for m in _imports(p) if m == "mlflow" or m.startswith("mlflow.")]
    assert bad == []
