"""`ganops ship-stats`: a run's test reference and real-data floor into stats/shipped/, for fresh clones.

Run it after a `dvc repro` on new default data (or after a change of the Inception protocol), then commit
stats/shipped/: the next first run reuses both instead of ~55 minutes of Inception on a 2-core AVX2 CPU.
Each file gets a sha256 digest of its contents, which the stages check before reusing it (metrics/precomputed.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.common import DebugOpt, run


def main(
    reference: Annotated[Path, typer.Option(help="test-split statistics (ganops reference)")] = Path(
        "stats/test_inception.safetensors"),
    floor: Annotated[Path, typer.Option(help="the floor's full record")] = Path("metrics/floor_detail.json"),
    to: Annotated[Path, typer.Option(help="directory the reference and floor stages reuse from")] = Path(
        "stats/shipped"),
    debug: DebugOpt = False,
) -> None:
    """Pack the reference (mu, the covariance's upper triangle, KID features) and copy the floor record, each with
    a digest of its contents."""

    def go() -> None:
        from ganops.errors import GanopsError
        from ganops.metrics.fid import FeatureStats
        from ganops.metrics.precomputed import pack_floor, pack_reference

        stats = FeatureStats.load(reference)
        try:
            record = json.loads(floor.read_text())
        except (OSError, ValueError) as e:
            raise GanopsError(f"{floor}: cannot read the floor record ({type(e).__name__}: {e})") from None
        if not isinstance(record, dict):
            raise GanopsError(f"{floor}: expected a JSON object (the floor's _detail.json)")
        for p in (pack_reference(stats, to), pack_floor(record, stats.meta["source_hash"], to)):
            typer.echo(f"ship-stats: wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")

    run(go, debug)
