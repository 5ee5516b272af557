"""`ganops reference`: Inception statistics of the test split, once per prepared-data version.

Every FID/KID is measured against these; they depend only on the data (and the feature network),
so DVC reruns this stage only when `data/prepared` changes, never for a new generator.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ganops.config import EvaluateConfig
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, check_writable, prepared_meta, run, tracked_run

SPLIT = "test"  # Lucic et al. 2018 protocol: generated samples vs the test images


def main(
    params: ParamsOpt = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="prepared-data directory")] = Path("data/prepared"),
    out: Annotated[Path, typer.Option(help="statistics file to write")] = Path("stats/test_inception.safetensors"),
    precomputed: Annotated[Path, typer.Option(
        "--precomputed", "--shipped", help="precomputed statistics to reuse when data, network and resize match")] = (
        Path("stats/shipped")),
    debug: DebugOpt = False,
) -> None:
    """Inception features and moments of the test split (the FID/KID reference)."""

    def go() -> None:
        from ganops.metrics.names import metric_kinds

        cfg = load_section(params, "evaluate", EvaluateConfig, choices={"metrics": metric_kinds()})
        check_writable(out)
        meta = prepared_meta(data)

        from ganops.data.prepared import load_split
        from ganops.metrics.inception import progress
        from ganops.metrics.precomputed import find_reference
        from ganops.metrics.reference import reference_meta, reference_stats
        from ganops.runtime import resolve_device

        test_x, _ = load_split(data, SPLIT)
        device = resolve_device(cfg.device)
        with tracked_run("reference", params, {"split": SPLIT, "batch_size": cfg.batch_size}, data_meta=meta) as mlrun:
            t0 = time.perf_counter()
            hit = find_reference(precomputed, reference_meta(SPLIT, meta["content_hash"]), len(test_x))
            if hit is not None:
                stats, source = hit
            else:
                with progress(f"reference: inception ({len(test_x)} {SPLIT} images)", len(test_x), typer.echo) as cb:
                    stats = reference_stats(test_x, split=SPLIT, source_hash=meta["content_hash"], progress=cb,
                                            batch_size=cfg.batch_size, device=device)
            seconds = time.perf_counter() - t0
            stats.save(out)
            mlrun.log_metrics({"n": stats.n, "seconds": seconds}
                              | ({} if hit else {"img_per_s": stats.n / seconds}))
            mlrun.set_tags({"ganops.stats_file": str(out)} | ({"ganops.shipped": str(source)} if hit else {}))
            how = f"reused {source} (same data hash, network and resize)" if hit else "computed"
            typer.echo(f"reference: wrote {out} ({stats.n} {SPLIT} images, {how}, {seconds:.0f} s); "
                       f"MLflow run {mlrun.run_id}")

    run(go, debug)
