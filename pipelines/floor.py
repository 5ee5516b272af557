"""`ganops floor`: the real-data floor, the metrics of N real training images vs the test reference.

What a perfect generator would score at this N (FID is biased upward at finite N); every model
FID is reported beside it. Recomputed only when the data, N or the metric list changes.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer

from ganops.config import EvaluateConfig
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, check_writable, prepared_meta, run, tracked_run
from pipelines.metrics_files import MetricsOpt, detail_of, write_metrics


def main(
    params: ParamsOpt = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="prepared-data directory")] = Path("data/prepared"),
    reference: Annotated[Path, typer.Option(help="test-split statistics (ganops reference)")] = Path(
        "stats/test_inception.safetensors"),
    metrics: MetricsOpt = Path("metrics/floor.json"),
    precomputed: Annotated[Path, typer.Option(
        "--precomputed", "--shipped", help="precomputed floors to reuse when data, N, seed and protocol match")] = (
        Path("stats/shipped")),
    debug: DebugOpt = False,
) -> None:
    """FID/KID of evaluate.num_samples training images vs the test reference."""

    def go() -> None:
        from ganops.metrics.names import metric_kinds

        cfg = load_section(params, "evaluate", EvaluateConfig, choices={"metrics": metric_kinds()})
        check_writable(metrics, detail_of(metrics))
        meta = prepared_meta(data)

        from ganops.data.prepared import load_split
        from ganops.metrics.fid import FeatureStats
        from ganops.metrics.floor import floor_indices, floor_protocols, real_data_floor
        from ganops.metrics.names import MetricName
        from ganops.metrics.precomputed import find_floor, floor_key
        from ganops.runtime import resolve_device

        ref = FeatureStats.load(reference, expect={"split": "test", "source_hash": meta["content_hash"]})
        train_x, _ = load_split(data, "train")
        floor_indices(len(train_x), cfg.num_samples, cfg.seed)  # fail before the MLflow run if N is too big
        names = [str(MetricName(k, cfg.num_samples)) for k in cfg.metrics]
        logged = {"evaluate": dataclasses.asdict(cfg)}  # the section it reads, prefixed like every stage's
        with tracked_run("floor", params, logged, data_meta=meta) as mlrun:
            t0 = time.perf_counter()
            key = floor_key(meta["content_hash"], cfg.num_samples, cfg.seed, floor_protocols(names, ref, cfg.seed))
            hit = find_floor(precomputed, key)
            if hit is not None:
                floor, source = hit
            else:
                floor = real_data_floor(train_x, ref, names, cfg.num_samples, cfg.seed, log=typer.echo,
                                        batch_size=cfg.batch_size, device=resolve_device(cfg.device))
            seconds = time.perf_counter() - t0
            if hit is not None:
                mlrun.set_tags({"ganops.shipped": str(source)})
            # named as evaluate logs them (floor/fid10k), in the metrics file and in MLflow, so neither a column
            # of `dvc exp show` nor a chart of all runs mixes the floor with a generator's fid10k; evaluate
            # reads the detail (protocols)
            named = {f"floor/{k}": v for k, v in floor["metrics"].items()}
            write_metrics(metrics, named, floor, mlrun)
            mlrun.log_metrics({**named, "seconds": seconds})
            shown = ", ".join(f"{k} {v:.4g}" for k, v in floor["metrics"].items())
            how = f"reused {source}" if hit else "computed"
            typer.echo(f"floor: {shown} ({cfg.num_samples} train vs {ref.n} test images, {how}, {seconds:.0f} s); "
                       f"wrote {metrics}; MLflow run {mlrun.run_id}")

    run(go, debug)
