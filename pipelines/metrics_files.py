"""The metrics file pair every stage writes: a few numbers for `dvc exp show`, the full record beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

MetricsOpt = Annotated[Path, typer.Option(
    "--metrics", help="DVC metrics JSON to write; the full record goes to <name>_detail.json beside it")]


def detail_of(metrics: Path) -> Path:
    """The full-record JSON beside a metrics file: metrics/evaluate.json -> metrics/evaluate_detail.json."""
    return metrics.with_name(f"{metrics.stem}_detail{metrics.suffix}")


def write_metrics(metrics: Path, summary: dict[str, Any], detail: dict[str, Any], mlrun: Any = None) -> None:
    """Write the numbers a user compares across experiments to `metrics` (a DVC metrics file: what
    `dvc exp show` and `dvc metrics diff` tabulate, so kept to a few columns) and the full record
    (protocols, per-class figures, losses, throughput) to `detail_of(metrics)`, a plain DVC out.
    Both are logged to `mlrun` when given."""
    from ganops.io import write_json

    write_json(detail_of(metrics), detail)
    write_json(metrics, summary)
    if mlrun is not None:
        mlrun.log_artifact(metrics)
        mlrun.log_artifact(detail_of(metrics))
