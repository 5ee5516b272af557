"""`ganops train`: adversarial training of the generator (also under torchrun for DDP)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ganops.config import ModelConfig, TrackingConfig, TrainConfig, load_section
from ganops.errors import GanopsError
from pipelines.common import DebugOpt, ParamsOpt, RenamedMetrics, check_writable, prepared_meta, run
from pipelines.metrics_files import MetricsOpt, detail_of, write_metrics

# metrics/train.json, what `dvc exp show` compares: the best epoch's judge FID and the compute budget (FLOPs are
# the same on any machine). Steps, losses, minutes, throughput and the FLOP breakdown go to its _detail.json.
SUMMARY = ("best_score", "total_flops")
ARCH_KEYS = ("latent_dim", "g_width", "d_width", "spectral_norm", "depth", "g_upsample")


def _autoencoder_state(path: Path, model_cfg: ModelConfig, meta: dict[str, Any],
                       key: bytes | None) -> tuple[dict[str, Any], float | None]:
    """The pretrained autoencoder's weights, after checking they fit this G and D, and the FLOPs its
    training took (None for a checkpoint that predates counting them): part of the recipe's budget."""
    from ganops.checkpoint import load_checkpoint

    state, config = load_checkpoint(path, kind="autoencoder", key=key)
    # ModelConfig gives fields a checkpoint predates their defaults (e.g. depth 0), as when it was written.
    saved_cfg = ModelConfig(**config["model"])
    for k in ARCH_KEYS:
        saved = getattr(saved_cfg, k)
        if saved != getattr(model_cfg, k):
            raise GanopsError(f"{path}: autoencoder has model.{k}={saved}, params say "
                              f"{getattr(model_cfg, k)}; rerun pretrain (dvc repro) or set "
                              "train.init_from_autoencoder: false")
    if (config["image_size"], config["channels"]) != (meta["image_size"], meta["channels"]):
        raise GanopsError(f"{path}: autoencoder is for {config['channels']}×{config['image_size']}² images, "
                          f"the data is {meta['channels']}×{meta['image_size']}²; rerun pretrain")
    return dict(state["model"]), config.get("train_flops")


def main(
    params: ParamsOpt = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="prepared-data directory")] = Path("data/prepared"),
    autoencoder: Annotated[Path, typer.Option(help="pretrained autoencoder (for train.init_from_autoencoder)")] = Path(
        "models/autoencoder.pt"),
    model_out: Annotated[Path, typer.Option(help="generator to write (EMA G)")] = Path("models/generator.pt"),
    checkpoints: Annotated[Path, typer.Option(help="directory for last.pt / best.pt")] = Path("checkpoints"),
    judge: Annotated[Path | None, typer.Option(help="judge checkpoint: its FID scores each epoch (picks best.pt); "
                                                    "without it a pixel-space FD does")] = None,
    metrics: MetricsOpt = Path("metrics/train.json"),
    plots: Annotated[Path, typer.Option(help="training curves CSV, one row per log point (DVC plots)")] = Path(
        "plots/train.csv"),
    epoch_plots: Annotated[Path, typer.Option(help="per-epoch score CSV: epoch, step, score, best_score (DVC "
                                                   "plots)")] = Path("plots/train_epochs.csv"),
    resume: Annotated[bool, typer.Option("--resume", help="continue from <checkpoints>/last.pt")] = False,
    debug: DebugOpt = False,
) -> None:
    """Adversarial training of the generator."""

    def go() -> None:
        from ganops.checkpoint import key_from_env

        key = key_from_env(os.environ)  # a bad key fails here, not after a whole training
        cfg = load_section(params, "train", TrainConfig)
        model_cfg = load_section(params, "model", ModelConfig)
        track = load_section(params, "tracking", TrackingConfig)
        check_writable(model_out, metrics, detail_of(metrics), plots, epoch_plots, dirs=[checkpoints])
        meta = prepared_meta(data)
        ae_state, pretrain_flops = (_autoencoder_state(autoencoder, model_cfg, meta, key)
                                    if cfg.init_from_autoencoder else (None, None))

        from ganops.training.distributed import cleanup_distributed, init_distributed

        dist = init_distributed(cfg.device)
        try:
            _train(cfg, model_cfg, track, meta, ae_state, pretrain_flops, dist, key)
        finally:
            cleanup_distributed()

    def _train(cfg: TrainConfig, model_cfg: ModelConfig, track: TrackingConfig, meta: dict[str, Any],
               ae_state: dict[str, Any] | None, pretrain_flops: float | None, dist: Any,
               key: bytes | None) -> None:
        from ganops.data.prepared import load_split
        from ganops.training.gan import train_gan

        train_x, train_y = load_split(data, "train")
        test_x, _ = load_split(data, "test")
        k = meta["num_classes"]
        score_fn = _score_fn(cfg, model_cfg, test_x, k, meta, key) if dist.is_main else None
        logged = {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg),
                  "score": "judge-fid" if judge is not None else "pixel-fd"}
        if dist.is_main:
            from ganops import tracking

            ctx: Any = tracking.stage_run("train", track.experiment, logged, tracking.repo_root(),
                                          data_meta=meta, system_metrics=track.system_metrics, params_file=params)
        else:
            ctx = contextlib.nullcontext(None)
        with ctx as mlrun:
            from ganops.training.common import NullSink

            # the core logs its epoch score generically; here it gets the name evaluate gives the same figure
            score = "judge/fid" if judge is not None else "pixel/fd"
            sink = RenamedMetrics(mlrun, {"epoch/score": score, "epoch/best_score": f"{score}_best"}) \
                if mlrun is not None else NullSink()
            res = train_gan(cfg, model_cfg, train_x, train_y, k, checkpoints, sink,
                            ae_state=ae_state, resume=resume, score_fn=score_fn, dist=dist,
                            log=typer.echo if dist.is_main else (lambda *_: None), key=key)
            if not dist.is_main:
                return
            _write_outputs(cfg, model_cfg, meta, res, mlrun, logged, key, pretrain_flops)

    def _score_fn(cfg: TrainConfig, model_cfg: ModelConfig, test_x: Any, k: int, meta: dict[str, Any],
                  key: bytes | None) -> Any:
        """Judge FID of n_eval samples vs the test split (pixel FD without a judge), lower is better."""
        n = min(cfg.n_eval, len(test_x))
        args = (n, model_cfg.latent_dim, model_cfg.latent_dist, k, model_cfg.conditional, cfg.seed)
        if judge is None:
            from ganops.metrics.pixel import pixel_fd_scorer

            return pixel_fd_scorer(test_x, *args)
        from ganops.metrics.judge import judge_score_fn, load_judge

        net = load_judge(judge, key=key)
        if net.meta.get("data_hash") != meta["content_hash"]:
            raise GanopsError(f"{judge}: judge was trained on other data; rerun `dvc repro judge`")
        return judge_score_fn(net, test_x, *args)

    def _write_outputs(cfg: TrainConfig, model_cfg: ModelConfig, meta: dict[str, Any], res: Any, mlrun: Any,
                       logged: dict[str, Any], key: bytes | None, pretrain_flops: float | None) -> None:
        from ganops.checkpoint import save_checkpoint
        from ganops.io import write_csv

        config = {**logged, "image_size": meta["image_size"], "channels": meta["channels"],
                  "num_classes": meta["num_classes"], "class_names": meta["class_names"],
                  "data_hash": meta["content_hash"], "ema": cfg.ema_decay > 0, "mlflow_run_id": mlrun.run_id}
        save_checkpoint(model_out, "generator", {"model": res.generator.state_dict()}, config, key=key)
        if "train_flops" in res.metrics:  # the recipe's compute budget (docs/results.md), the same on any machine
            res.metrics["pretrain_flops"] = float(pretrain_flops or 0.0)
            res.metrics["total_flops"] = res.metrics["train_flops"] + res.metrics["pretrain_flops"]
            typer.echo(f"train: compute {res.metrics['total_flops'] / 1e12:.1f} TFLOP = train "
                       f"{res.metrics['flops_per_step'] / 1e9:.2f} GFLOP/step × {int(res.metrics['steps'])} steps"
                       f" + pretrain {res.metrics['pretrain_flops'] / 1e12:.1f} TFLOP")
        write_metrics(metrics, {k: res.metrics[k] for k in SUMMARY if k in res.metrics}, res.metrics, mlrun)
        # Two tables, so neither has empty cells (a plot draws an empty cell as 0): the loss curves at every
        # log point, and the judge score at the epoch ends that have one.
        write_csv(plots, res.history.drop(columns="score"))
        scored = res.history.dropna(subset=["score"])[["epoch", "step", "score"]]
        write_csv(epoch_plots, scored.assign(best_score=scored["score"].cummin()))
        mlrun.log_metrics(res.metrics)  # the step curves are train/*, the epoch score judge/fid
        mlrun.log_artifact(plots)
        mlrun.log_artifact(epoch_plots)
        typer.echo(f"train: wrote {model_out} ({'EMA ' if cfg.ema_decay else ''}generator); "
                   f"MLflow run {mlrun.run_id}")

    run(go, debug)
