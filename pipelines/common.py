"""What every command shares: option types and error → exit-code mapping."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from ganops.errors import GanopsError

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


def not_implemented(stage: str) -> None:
    typer.echo(f"error: `ganops {stage}` is not implemented yet (see the issue tracker)", err=True)
    sys.exit(2)
