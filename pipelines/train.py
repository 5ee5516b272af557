"""`ganops train`: adversarial training of the generator (also under torchrun for DDP)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ganops.config import ModelConfig, TrainConfig
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, RenamedMetrics, check_writable, prepared_meta, run, tracked_run
from pipelines.metrics_files import MetricsOpt, detail_of, write_metrics

# metrics/train.json, what `dvc exp show` compares: the best epoch's judge FID and the compute budget (FLOPs are
# the same on any machine). Steps, losses, minutes, throughput and the FLOP breakdown go to its _detail.json.
SUMMARY = ("best_score", "total_flops")


@dataclass(frozen=True)
class Outputs:
    model: Path  # the shipped generator (EMA G)
    metrics: Path
    plots: Path  # loss curves, one row per log point
    epoch_plots: Path  # the epoch scores


def score_fn(cfg: TrainConfig, model_cfg: ModelConfig, judge: Path | None, test_x: Any, meta: dict[str, Any],
             key: bytes | None) -> Any:
    """Judge FID of n_eval samples vs the test split (pixel FD without a judge), lower is better."""
    n = min(cfg.n_eval, len(test_x))
    args = (n, model_cfg.latent_dim, model_cfg.latent_dist, meta["num_classes"], model_cfg.conditional, cfg.seed)
    if judge is None:
        from ganops.metrics.pixel import pixel_fd_scorer

        return pixel_fd_scorer(test_x, *args)
    from ganops.data.prepared import check_trained_on
    from ganops.metrics.judge import judge_score_fn, load_judge

    net = load_judge(judge, key=key)
    check_trained_on(judge, net.meta.get("data_hash"), meta, "judge")
    return judge_score_fn(net, test_x, *args)


def run_inputs(meta: dict[str, Any], autoencoder: Path | None, judge: Path | None) -> dict[str, str]:
    """Digests of what a run starts from besides its params, stored in its checkpoints: a last.pt whose
    digests differ is another run's and is not continued (--auto-resume). The code is every module of
    ganops and pipelines, a superset of the stage's DVC deps: an edit anywhere starts training over."""
    import ganops
    import pipelines
    from ganops.io import file_digest
    from ganops.provenance import code_sha256

    code = code_sha256(Path(ganops.__file__).parent, Path(pipelines.__file__).parent)
    return {"data": meta["content_hash"], "code": code,
            **({"autoencoder": file_digest(autoencoder)} if autoencoder is not None else {}),
            **({"judge": file_digest(judge)} if judge is not None else {})}


def write_outputs(cfg: TrainConfig, meta: dict[str, Any], res: Any, mlrun: Any, logged: dict[str, Any],
                  key: bytes | None, pretrain_flops: float | None, out: Outputs) -> None:
    """The generator file (its config: what made it and on which data), the metrics pair and both plots CSVs."""
    from ganops.io import write_csv
    from ganops.models.generator import save_generator

    config = {**logged, "image_size": meta["image_size"], "channels": meta["channels"],
              "num_classes": meta["num_classes"], "class_names": meta["class_names"],
              "data_hash": meta["content_hash"], "ema": cfg.ema_decay > 0, "mlflow_run_id": mlrun.run_id}
    save_generator(out.model, res.generator, config, key=key)
    if "train_flops" in res.metrics:  # the recipe's compute budget (docs/results.md), the same on any machine
        res.metrics["pretrain_flops"] = float(pretrain_flops or 0.0)
        res.metrics["total_flops"] = res.metrics["train_flops"] + res.metrics["pretrain_flops"]
        typer.echo(f"train: compute {res.metrics['total_flops'] / 1e12:.1f} TFLOP = train "
                   f"{res.metrics['flops_per_step'] / 1e9:.2f} GFLOP/step × {int(res.metrics['steps'])} steps"
                   f" + pretrain {res.metrics['pretrain_flops'] / 1e12:.1f} TFLOP")
    write_metrics(out.metrics, {k: res.metrics[k] for k in SUMMARY if k in res.metrics}, res.metrics, mlrun)
    # Two tables, so neither has empty cells (a plot draws an empty cell as 0): the loss curves at every
    # log point, and the judge score at the epoch ends that have one.
    write_csv(out.plots, res.history.drop(columns="score"))
    scored = res.history.dropna(subset=["score"])[["epoch", "step", "score"]]
    write_csv(out.epoch_plots, scored.assign(best_score=scored["score"].cummin()))
    mlrun.log_metrics(res.metrics)  # the step curves are train/*, the epoch score judge/fid
    if res.resumed_from is not None:  # this run continued a killed one of the same params, data and code
        mlrun.set_tags({"ganops.resumed_from_step": str(res.resumed_from)})
    mlrun.log_artifact(out.plots)
    mlrun.log_artifact(out.epoch_plots)
    typer.echo(f"train: wrote {out.model} ({'EMA ' if cfg.ema_decay else ''}generator); MLflow run {mlrun.run_id}")


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
    auto_resume: Annotated[bool, typer.Option(
        "--auto-resume", help="continue from <checkpoints>/last.pt only when it is this run's (same params, "
                              "prepared data, autoencoder, judge, code, torch and precision), else start from "
                              "step 0 saying why; what dvc.yaml runs")] = False,
    debug: DebugOpt = False,
) -> None:
    """Adversarial training of the generator."""
    out = Outputs(model_out, metrics, plots, epoch_plots)

    def go() -> None:
        from ganops.checkpoint import key_from_env
        from ganops.data.prepared import load_split
        from ganops.errors import GanopsError
        from ganops.losses import GAN_LOSSES
        from ganops.models.autoencoder import init_state
        from ganops.training.common import NullSink
        from ganops.training.distributed import cleanup_distributed, init_distributed
        from ganops.training.gan import train_gan

        if resume and auto_resume:
            raise GanopsError("train: give --resume or --auto-resume, not both")
        key = key_from_env(os.environ)  # a bad key fails here, not after a whole training
        cfg = load_section(params, "train", TrainConfig, choices={"loss": GAN_LOSSES})
        model_cfg = load_section(params, "model", ModelConfig)
        check_writable(model_out, metrics, detail_of(metrics), plots, epoch_plots, dirs=[checkpoints])
        meta = prepared_meta(data)
        ae_state, pretrain_flops = (init_state(autoencoder, model_cfg, meta, key)
                                    if cfg.init_from_autoencoder else (None, None))
        identity = run_inputs(meta, autoencoder if cfg.init_from_autoencoder else None, judge)
        dist = init_distributed(cfg.device)
        try:
            train_x, train_y = load_split(data, "train")
            test_x, _ = load_split(data, "test")
            scorer = score_fn(cfg, model_cfg, judge, test_x, meta, key) if dist.is_main else None
            logged = {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg),
                      "score": "judge-fid" if judge is not None else "pixel-fd"}
            # only rank 0 of a torchrun job records a run and writes outputs
            ctx: Any = tracked_run("train", params, logged, data_meta=meta) if dist.is_main \
                else contextlib.nullcontext(None)
            with ctx as mlrun:
                # the core logs its epoch score generically; here it gets the name evaluate gives the same figure
                score = "judge/fid" if judge is not None else "pixel/fd"
                sink = RenamedMetrics(mlrun, {"epoch/score": score, "epoch/best_score": f"{score}_best"}) \
                    if mlrun is not None else NullSink()
                res = train_gan(cfg, model_cfg, train_x, train_y, meta["num_classes"], checkpoints, sink,
                                ae_state=ae_state, resume="auto" if auto_resume else resume, score_fn=scorer,
                                dist=dist, log=typer.echo if dist.is_main else (lambda *_: None), key=key,
                                identity=identity)
                if dist.is_main:
                    write_outputs(cfg, meta, res, mlrun, logged, key, pretrain_flops, out)
        finally:
            cleanup_distributed()

    run(go, debug)
