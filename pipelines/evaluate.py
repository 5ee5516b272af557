"""`ganops evaluate`: standard metrics of the trained generator beside the real-data floor; register it.

Reads the cached reference statistics (`ganops reference`), the floor (`ganops floor`) and the judge
(`ganops judge`); generates evaluate.num_samples seeded images per generator, quantised to uint8 like
real ones. The first --generator is the candidate: its numbers go to the metrics file and MLflow, and
it becomes a new version of promote.model_name in the MLflow registry. Further --generator files
(e.g. checkpoints/best.pt) are scored too and land as rows of the plots CSV.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ganops.config import EvaluateConfig, PromoteConfig
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, check_writable, prepared_meta, run, tracked_run
from pipelines.metrics_files import MetricsOpt, detail_of, write_metrics


@dataclass(frozen=True)
class Against:
    """What every generator is scored against: the test reference, the floor, the judge and the data."""

    ref: Any  # FeatureStats of the test split (ganops reference)
    names: list[str]  # protocol names, e.g. ["fid10k", "kid10k"]
    floor: dict[str, Any]  # ganops floor's record
    judge: Any  # JudgeNet
    judge_ref: Any  # the judge's FeatureStats of the test split
    meta: dict[str, Any]  # the prepared data's meta


@dataclass(frozen=True)
class Outputs:
    metrics: Path
    plots: Path
    samples: Path  # grid directory
    candidate: Path


def load_against(cfg: EvaluateConfig, data: Path, reference: Path, floor: Path, judge: Path,
                 key: bytes | None) -> Against:
    from ganops.data.prepared import check_trained_on, load_split
    from ganops.metrics.evaluation import read_floor
    from ganops.metrics.fid import FeatureStats
    from ganops.metrics.judge import judge_reference_stats, load_judge
    from ganops.metrics.names import MetricName

    meta = prepared_meta(data)
    names = [str(MetricName(k, cfg.num_samples)) for k in cfg.metrics]
    ref = FeatureStats.load(reference, expect={"split": "test", "source_hash": meta["content_hash"]})
    floor_data = read_floor(floor, names, meta)
    judge_net = load_judge(judge, key=key)
    check_trained_on(judge, judge_net.meta.get("data_hash"), meta, "judge")
    test_x, _ = load_split(data, "test")
    return Against(ref, names, floor_data, judge_net, judge_reference_stats(judge_net, test_x), meta)


def score(cfg: EvaluateConfig, path: Path, G: Any, gcfg: dict[str, Any],
          on: Against) -> tuple[dict[str, Any], Any, Any, float]:
    """(metrics of `cfg.num_samples` seeded samples of G, the uint8 images, their labels or None, seconds)."""
    from ganops.metrics.evaluation import evaluate_images
    from ganops.models.seeded_samples import sample_images

    t0 = time.perf_counter()
    images, labels = sample_images(G, gcfg, cfg.num_samples, cfg.seed)  # uint8 (N, C, H, W)
    typer.echo(f"evaluate: {path}: {len(images)} samples in {time.perf_counter() - t0:.1f} s")
    res = evaluate_images(images, on.ref, on.names, on.floor, judge=on.judge, judge_ref=on.judge_ref,
                          class_names=on.meta["class_names"], seed=cfg.seed, log=typer.echo,
                          batch_size=cfg.batch_size, device=next(G.parameters()).device,
                          judge_samples=cfg.judge_samples)
    return {"generator": str(path), "num_samples": cfg.num_samples, **res}, images, labels, time.perf_counter() - t0


def log_grids(cfg: EvaluateConfig, images: Any, labels: Any, on: Against, grid_dir: Path, mlrun: Any) -> None:
    """The candidate's first samples, and one row per class: by the conditioning label, else by the judge's
    label (a missing row is a lost mode)."""
    from ganops.metrics.judge import judge_predict
    from ganops.sampling import class_rows, write_grid

    mlrun.log_artifact(write_grid(grid_dir / "grid.png", images[:cfg.grid_size], nrow=8), "samples")
    by = labels if labels is not None else judge_predict(on.judge, images[:cfg.judge_samples])
    per_row = max(cfg.grid_size // on.meta["num_classes"], 1)
    rows, _ = class_rows(images[:len(by)], by, on.meta["num_classes"], per_row)
    if len(rows):
        mlrun.log_artifact(write_grid(grid_dir / "classes.png", rows, nrow=per_row), "samples")


def finish(res: dict[str, Any], rows: list[dict[str, Any]], cand_path: Path, mlrun: Any,
           out: Outputs) -> dict[str, float]:
    """Write the metrics pair and the plots CSV, log the candidate's figures; return them flat (MLflow names)."""
    import pandas as pd

    from ganops.gate import MIN_SHARE, fid_key, kid_key
    from ganops.io import write_csv

    fid_name = fid_key(res)
    judge_res = res["judge"]
    summary = {k: v for k, v in res.items() if isinstance(v, int | float) and k != "num_samples"}
    # the judge's figure beside fid, kid ± std and the floor ratio: the weakest class's share, named as in
    # MLflow and the gate; judge FID, entropy, per-class shares and protocols go to the _detail.json
    summary[MIN_SHARE] = judge_res["min_share_ratio"]
    write_metrics(out.metrics, summary, res, mlrun)
    write_csv(out.plots, pd.DataFrame([{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows]))
    flat = {k: float(v) for k, v in res.items() if isinstance(v, int | float) and k != "num_samples"}
    flat |= {f"floor/{k}": v for k, v in res.get("floor", {}).items()}
    flat |= {f"judge/{k}": float(v) for k, v in judge_res.items() if isinstance(v, int | float)}
    flat |= {f"judge/share/{k}": v for k, v in judge_res["class_shares"].items()}
    mlrun.log_metrics(flat | {"seconds": rows[0]["eval_seconds"]})  # `seconds`: every stage's wall time
    mlrun.log_artifact(out.plots)
    collapsed = judge_res["collapsed"]
    mlrun.set_tags({"ganops.mode_collapse": str(bool(collapsed)).lower(),
                    "ganops.collapsed_classes": ",".join(collapsed) or "-"})
    if collapsed:
        typer.echo(f"warning: mode collapse: the judge sees {', '.join(collapsed)} in under a quarter of "
                   f"their expected share of {judge_res['n']} samples", err=True)
    floor_txt = f" (real-data floor {res['floor'][fid_name]:.3f}, ×{res[f'{fid_name}_over_floor']:.2f})" \
        if "floor" in res else ""
    kid_name = kid_key(fid_name)
    kid_txt = f", {kid_name} {res[kid_name]:.5f} ± {res[kid_name + '_std']:.5f}" if kid_name in res else ""
    typer.echo(f"evaluate: {cand_path}: {fid_name} {res[fid_name]:.3f}{floor_txt}{kid_txt}, class-coverage "
               f"entropy {judge_res['normalized_entropy']:.3f} ({rows[0]['eval_seconds']:.0f} s)")
    return flat


def register(model_name: str, cand_path: Path, flat: dict[str, float], collapsed: bool, mlrun: Any) -> dict[str, Any]:
    """A new version of `model_name` in the MLflow registry, carrying the figures the gate reads as tags."""
    from ganops.gate import gate_inputs
    from ganops.tracking.model_registry import register_generator

    version = register_generator(mlrun, cand_path, model_name, metrics=flat, tag_metrics=gate_inputs(flat),
                                          tags={"ganops.mode_collapse": str(collapsed).lower()})
    typer.echo(f"evaluate: registered {version.model_uri} (MLflow run {mlrun.run_id})")
    return {"registered": True, **dataclasses.asdict(version)}


def main(
    params: ParamsOpt = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="prepared-data directory")] = Path("data/prepared"),
    generator: Annotated[list[Path], typer.Option(help="generator file(s); the first is the candidate")] = [  # noqa: B006
        Path("models/generator.pt")],
    judge: Annotated[Path, typer.Option(help="judge checkpoint (ganops judge)")] = Path("models/judge.pt"),
    reference: Annotated[Path, typer.Option(help="test-split statistics (ganops reference)")] = Path(
        "stats/test_inception.safetensors"),
    floor: Annotated[Path, typer.Option(help="real-data floor record (ganops floor's _detail.json)")] = Path(
        "metrics/floor_detail.json"),
    metrics: MetricsOpt = Path("metrics/evaluate.json"),
    plots: Annotated[Path, typer.Option(help="one row per generator (DVC plots)")] = Path("plots/evaluate.csv"),
    samples: Annotated[Path, typer.Option(help="directory for sample grids")] = Path("samples"),
    candidate: Annotated[Path, typer.Option(help="JSON naming the registered version")] = Path(
        "models/candidate.json"),
    debug: DebugOpt = False,
) -> None:
    """FID/KID (+ floor, judge coverage) of the generator; register it in the MLflow registry."""
    out = Outputs(metrics, plots, samples, candidate)

    def go() -> None:
        from ganops.checkpoint import key_from_env
        from ganops.data.prepared import check_trained_on
        from ganops.io import write_json
        from ganops.metrics.names import metric_kinds
        from ganops.models.generator import load_generator
        from ganops.runtime import resolve_device

        cfg = load_section(params, "evaluate", EvaluateConfig, choices={"metrics": metric_kinds()})
        promote = load_section(params, "promote", PromoteConfig)
        check_writable(metrics, detail_of(metrics), plots, candidate, dirs=[samples])
        key = key_from_env(os.environ)
        on = load_against(cfg, data, reference, floor, judge, key)
        gens = [(path, *load_generator(path, key=key)) for path in generator]
        for path, _, gcfg in gens:
            check_trained_on(path, gcfg.get("data_hash"), on.meta, "train")
        device = resolve_device(cfg.device)
        # what made the candidate (its checkpoint's train and model sections), so MLflow's "Compare" of two
        # evaluate runs shows the recipe that changed beside the figures
        made_by = {k: gens[0][2][k] for k in ("model", "train") if isinstance(gens[0][2].get(k), dict)}
        logged = {"evaluate": dataclasses.asdict(cfg), "generators": [str(p) for p in generator],
                  "model_name": promote.model_name, **made_by}
        with tracked_run("evaluate", params, logged, data_meta=on.meta) as mlrun:
            rows, results = [], []
            for path, G, gcfg in gens:
                res, images, labels, seconds = score(cfg, path, G.to(device), gcfg, on)
                if not results:
                    log_grids(cfg, images, labels, on, samples, mlrun)
                results.append(res)
                rows.append({"generator": str(path), **{k: res[k] for k in res if k in on.names or
                                                       k.endswith("_std")},
                             "judge_fid": res["judge"].get("fid"),
                             "coverage_entropy": res["judge"]["normalized_entropy"], "eval_seconds": seconds})
            res = results[0]
            flat = finish(res, rows, generator[0], mlrun, out)
            info: dict[str, Any] = {"registered": False, "run_id": mlrun.run_id, "metrics": flat}
            if cfg.register:
                info |= register(promote.model_name, generator[0], flat, bool(res["judge"]["collapsed"]), mlrun)
            write_json(candidate, info)

    run(go, debug)
