"""`ganops profile`: merge a params profile (profiles/gpu.yaml, profiles/smoke.yaml) into params.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.common import DebugOpt, ParamsOpt, run


def main(
    profile: Annotated[Path | None, typer.Argument(help="YAML file of params overrides")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: Annotated[list[str] | None, typer.Option("--set", "-S", help="section.key=value, after the profile")] = None,
    debug: DebugOpt = False,
) -> None:
    """Merge a profile (and --set overrides) into params.yaml; refuses invalid values without writing."""

    def go() -> None:
        from ganops.profiles import apply_profile

        changed = apply_profile(params, profile, set_ or [])
        typer.echo(f"profile: {params} updated ({', '.join(changed) or 'nothing'})")

    run(go, debug)
