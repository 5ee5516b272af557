"""What every command shares: option types and error → exit-code mapping."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ganops.errors import GanopsError
from ganops.io import check_writable as check_writable  # stages call it on their outputs before the work

T = TypeVar("T")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read this stage's section from")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show the full traceback on errors")]


def run(fn: Callable[[], T], debug: bool = False) -> T:
    """Call `fn`; a GanopsError becomes its message on stderr and its exit code."""
    try:
        return fn()
    except GanopsError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def prepared_meta(data: Path) -> dict[str, Any]:
    """The prepared data's meta.json, refused early if the networks cannot take its image size."""
    from ganops.data.prepared import read_meta
    from ganops.models import size_plan

    meta = read_meta(data)
    try:
        size_plan(meta["image_size"], meta["channels"])
    except ValueError as e:
        raise GanopsError(f"{data / 'meta.json'}: {e}") from None
    return meta


def not_implemented(stage: str) -> None:
    typer.echo(f"error: `ganops {stage}` is not implemented yet (see the issue tracker)", err=True)
    sys.exit(2)
