"""`ganops judge`: train the judge classifier that scores generated samples (coverage, judge FID)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from ganops.config import JudgeConfig
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, check_writable, prepared_meta, run, tracked_run
from pipelines.metrics_files import MetricsOpt, detail_of, write_metrics

MIN_ACCURACY = 0.5  # below this the judge's coverage numbers mean little: warn loudly


def main(
    params: ParamsOpt = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="prepared-data directory")] = Path("data/prepared"),
    model_out: Annotated[Path, typer.Option(help="judge checkpoint to write")] = Path("models/judge.pt"),
    metrics: MetricsOpt = Path("metrics/judge.json"),
    debug: DebugOpt = False,
) -> None:
    """Train the judge classifier on the prepared train split; report its test accuracy."""

    def go() -> None:
        from ganops.checkpoint import key_from_env

        key = key_from_env(os.environ)
        cfg = load_section(params, "judge", JudgeConfig)
        check_writable(model_out, metrics, detail_of(metrics))
        meta = prepared_meta(data)

        from ganops.data.prepared import load_split
        from ganops.metrics.judge import save_judge
        from ganops.training.judge import train_judge

        train_x, train_y = load_split(data, "train")
        test_x, test_y = load_split(data, "test")
        logged = {"judge": dataclasses.asdict(cfg)}
        with tracked_run("judge", params, logged, data_meta=meta) as mlrun:
            model, m = train_judge(train_x, train_y, test_x, test_y, meta["num_classes"], epochs=cfg.epochs,
                                   batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, width=cfg.width,
                                   runtime=cfg, log=typer.echo)
            names = meta["class_names"]
            save_judge(model_out, model, {"class_names": names, "test_accuracy": m["test_accuracy"],
                                          "data_hash": meta["content_hash"], "mlflow_run_id": mlrun.run_id},
                       key=key)
            # timings go to MLflow only: the DVC metrics file stays identical for identical inputs
            out = {"test_accuracy": m["test_accuracy"], "train_accuracy": m["train_accuracy"],
                   "train_loss": m["train_loss"], "epochs": m["epochs"], "steps": m["steps"],
                   "per_class_accuracy": dict(zip(names, m["per_class_accuracy"], strict=True))}
            write_metrics(metrics, {"test_accuracy": out["test_accuracy"]}, out, mlrun)
            # `seconds`: every stage's wall time of its work (here the optimisation; eval_seconds the test passes)
            mlrun.log_metrics({("seconds" if k == "train_seconds" else k): v for k, v in m.items()
                               if not isinstance(v, list)})
            mlrun.log_metrics({f"class_accuracy/{n}": a for n, a in out["per_class_accuracy"].items()})
            if m["test_accuracy"] < MIN_ACCURACY:
                typer.echo(f"warning: judge test accuracy {m['test_accuracy']:.3f} is low; its class coverage "
                           "and judge FID are unreliable (more judge.epochs?)", err=True)
            typer.echo(f"judge: test accuracy {m['test_accuracy']:.4f} ({m['train_seconds']:.0f} s, "
                       f"{m['img_per_s']:.0f} img/s); wrote {model_out}; MLflow run {mlrun.run_id}")

    run(go, debug)
