"""`ganops pretrain`: train the autoencoder (or VAE) whose weights can initialise G and D."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from ganops.config import ModelConfig, PretrainConfig
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, check_writable, prepared_meta, run, tracked_run
from pipelines.metrics_files import MetricsOpt, detail_of, write_metrics

SUMMARY = ("test_loss", "train_flops")  # metrics/pretrain.json; the rest (minutes too) goes to its _detail.json


def main(
    params: ParamsOpt = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="prepared-data directory")] = Path("data/prepared"),
    model_out: Annotated[Path, typer.Option(help="autoencoder checkpoint to write")] = Path(
        "models/autoencoder.pt"),
    metrics: MetricsOpt = Path("metrics/pretrain.json"),
    plots: Annotated[Path, typer.Option(help="per-epoch losses CSV (DVC plots)")] = Path("plots/pretrain.csv"),
    debug: DebugOpt = False,
) -> None:
    """Train the autoencoder whose weights initialise G and D."""

    def go() -> None:
        from ganops.checkpoint import key_from_env

        key = key_from_env(os.environ)  # checked before the work, not after it
        cfg = load_section(params, "pretrain", PretrainConfig)
        model_cfg = load_section(params, "model", ModelConfig)
        check_writable(model_out, metrics, detail_of(metrics), plots)
        from ganops.data.prepared import load_split

        meta = prepared_meta(data)
        train_x, _ = load_split(data, "train")
        test_x, _ = load_split(data, "test")

        from ganops.io import write_csv
        from ganops.models.autoencoder import save_autoencoder
        from ganops.training.autoencoder import pretrain_autoencoder

        logged = {"pretrain": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg)}
        with tracked_run("pretrain", params, logged, data_meta=meta) as mlrun:
            res = pretrain_autoencoder(cfg, model_cfg, train_x, test_x, sink=mlrun)
            config = {**logged, "image_size": meta["image_size"], "channels": meta["channels"],
                      "variational": cfg.variational, "data_hash": meta["content_hash"],
                      "mlflow_run_id": mlrun.run_id, "train_flops": res.metrics.get("train_flops")}
            save_autoencoder(model_out, res.model, config, key=key)
            write_metrics(metrics, {k: res.metrics[k] for k in SUMMARY if k in res.metrics}, res.metrics, mlrun)
            write_csv(plots, res.history)
            mlrun.log_metrics(res.metrics)  # the epoch curves are epoch/*, so these names are free
            mlrun.log_artifact(plots)
            typer.echo(f"pretrain: test reconstruction loss {res.metrics['test_loss']:.4f} after "
                       f"{cfg.epochs} epochs ({res.metrics['img_per_s']:.0f} img/s, "
                       f"{res.metrics.get('train_flops', 0) / 1e12:.1f} TFLOP); wrote {model_out}; "
                       f"MLflow run {mlrun.run_id}")

    run(go, debug)
