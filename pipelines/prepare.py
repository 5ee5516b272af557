"""`ganops prepare`: read the source in params `data:`, validate it with GX, write data/prepared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ganops.config import DataConfig, load_section
from pipelines.common import DebugOpt, ParamsOpt, run


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
        from ganops.data.prepare import prepare_dataset

        cfg = load_section(params, "data", DataConfig)
        res = prepare_dataset(cfg, raw, out, validation)
        m = res.meta
        typer.echo(f"prepared {m['source']}: {m['counts']['train']} train + {m['counts']['test']} test "
                   f"images {'×'.join(map(str, m['shape']))}, {m['num_classes']} classes, "
                   f"content hash {m['content_hash']}")
        typer.echo(f"validation: {res.report.evaluated} expectations passed; "
                   f"Data Docs at {res.report.docs_index}")

    run(go, debug)
