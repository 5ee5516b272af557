"""`ganops prepare`: read the source in params `data:`, validate it with GX, write data/prepared.

Like every stage it is one MLflow run: the `data` params, the prepared data's meta and content hash
(tag `ganops.data_hash`), counts and expectation figures as metrics, the GX report (also when
validation fails, so a refused dataset is inspectable in the UI) and a grid of real images per class.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer

from ganops.config import DataConfig
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, check_writable, run, tracked_run

PER_CLASS = 8  # real images per class in the logged grid


def main(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="prepared-data directory to write")] = Path("data/prepared"),
    raw: Annotated[Path, typer.Option(help="where torchvision downloads go")] = Path("data/raw"),
    validation: Annotated[Path, typer.Option(help="GX report and Data Docs directory")] = Path(
        "data/validation"),
    debug: DebugOpt = False,
) -> None:
    """Read, validate (Great Expectations) and write the dataset."""

    def go() -> None:
        from ganops.data.sources import SOURCES

        cfg = load_section(params, "data", DataConfig, choices={"source": SOURCES})
        check_writable(dirs=[out, validation, raw if cfg.download else None])
        from ganops import tracking
        from ganops.data.prepare import prepare_dataset
        from ganops.data.validation import REPORT_NAME
        from ganops.errors import ValidationFailed

        report = validation / REPORT_NAME
        with tracked_run("prepare", params, {"data": dataclasses.asdict(cfg)}) as mlrun:
            t0 = time.perf_counter()
            try:
                res = prepare_dataset(cfg, raw, out, validation)
            except ValidationFailed:
                if report.is_file():  # just written by this run's validation
                    mlrun.log_artifact(report, "validation")
                raise
            m = res.meta
            mlrun.set_tags({tracking.TAG_DATA: m["content_hash"]})
            mlrun.log_dict(m, "data_meta.json")
            mlrun.log_artifact(res.report.report_path, "validation")
            mlrun.log_metrics({"train_images": m["counts"]["train"], "test_images": m["counts"]["test"],
                               "num_classes": m["num_classes"], "dedupe_removed": m["dedupe_removed"],
                               "expectations_passed": res.report.evaluated,
                               "seconds": time.perf_counter() - t0})
            _log_real_grid(mlrun, out, m["num_classes"])
        typer.echo(f"prepared {m['source']}: {m['counts']['train']} train + {m['counts']['test']} test "
                   f"images {'×'.join(map(str, m['shape']))}, {m['num_classes']} classes, "
                   f"content hash {m['content_hash']}; MLflow run {mlrun.run_id}")
        typer.echo(f"validation: {res.report.evaluated} expectations passed; "
                   f"Data Docs at {res.report.docs_index}")

    run(go, debug)


def _log_real_grid(mlrun: object, out: Path, num_classes: int) -> None:
    """The first PER_CLASS training images of each class, one row per class (what G should draw)."""
    from ganops.data.prepared import load_split
    from ganops.sampling import class_rows

    x, y = load_split(out, "train")  # (N, C, H, W) uint8, (N,)
    grid, classes = class_rows(x, y, num_classes, PER_CLASS)  # (R·PER_CLASS, C, H, W)
    if classes:
        mlrun.log_image_grid(grid, "real_samples", nrow=PER_CLASS)  # type: ignore[attr-defined]
