"""`ganops evaluate`: standard metrics of the trained generator beside the real-data floor; register it.

Reads the cached reference statistics (`ganops reference`), the floor (`ganops floor`) and the judge
(`ganops judge`); generates evaluate.num_samples seeded images per generator, quantised to uint8 like
real ones. The first --generator is the candidate: its numbers go to the metrics file and MLflow, and
it becomes a new version of promote.model_name in the MLflow registry. Further --generator files
(e.g. checkpoints/best.pt) are scored too and land as rows of the plots CSV.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ganops.config import EvaluateConfig, PromoteConfig, TrackingConfig, load_section
from ganops.errors import GanopsError
from pipelines.common import DebugOpt, ParamsOpt, check_writable, prepared_meta, run
from pipelines.metrics_files import MetricsOpt, detail_of, write_metrics

# The judge's figure in metrics/evaluate.json (beside fid, kid ± std and the floor ratio): the weakest class's
# share, named as in MLflow and the gate. Judge FID, entropy, per-class shares and protocols: its _detail.json.
JUDGE_SUMMARY = ("min_share_ratio",)


def _read_floor(path: Path, names: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    """The floor JSON, refused if it was made for other data or another N/metric list."""
    if not path.is_file():
        raise GanopsError(f"{path}: real-data floor not found; run `dvc repro floor`")
    try:
        floor = json.loads(path.read_text())
        have, protocols = floor["metrics"], floor["protocol"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise GanopsError(f"{path}: not a floor file ({type(e).__name__}: {e})") from None
    missing = [n for n in names if n not in have]
    stale = {p.get("ref_source_hash") for p in protocols.values()} - {meta["content_hash"]}
    if missing or stale:
        why = f"no {', '.join(missing)}" if missing else f"made for data {', '.join(map(str, stale))}"
        raise GanopsError(f"{path}: floor is {why}, not for this evaluation; rerun `dvc repro floor`")
    return floor


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

    def go() -> None:
        cfg = load_section(params, "evaluate", EvaluateConfig)
        promote = load_section(params, "promote", PromoteConfig)
        track = load_section(params, "tracking", TrackingConfig)
        check_writable(metrics, detail_of(metrics), plots, candidate, dirs=[samples])
        meta = prepared_meta(data)

        from ganops import tracking
        from ganops.checkpoint import key_from_env
        from ganops.data.prepared import load_split
        from ganops.metrics.fid import FeatureStats
        from ganops.metrics.judge import judge_reference_stats, load_judge
        from ganops.metrics.registry import metric_name
        from ganops.models.shipped import load_generator
        from ganops.training.common import resolve_device

        names = [metric_name(k, cfg.num_samples) for k in cfg.metrics]
        ref = FeatureStats.load(reference, expect={"split": "test", "source_hash": meta["content_hash"]})
        floor_data = _read_floor(floor, names, meta)
        key = key_from_env(os.environ)
        judge_net = load_judge(judge, key=key)
        if judge_net.meta.get("data_hash") != meta["content_hash"]:
            raise GanopsError(f"{judge}: judge was trained on data {judge_net.meta.get('data_hash')}, the "
                              f"prepared data is {meta['content_hash']}; rerun `dvc repro judge`")
        gens = [(path, *load_generator(path, key=key)) for path in generator]
        for path, _, gcfg in gens:
            if gcfg.get("data_hash") not in (None, meta["content_hash"]):
                raise GanopsError(f"{path}: generator was trained on data {gcfg['data_hash']}, the prepared "
                                  f"data is {meta['content_hash']}; rerun `dvc repro train`")
        test_x, _ = load_split(data, "test")
        judge_ref = judge_reference_stats(judge_net, test_x)
        device = resolve_device(cfg.device)
        # what made the candidate (its checkpoint's train and model sections), so MLflow's "Compare" of two
        # evaluate runs shows the recipe that changed beside the figures
        made_by = {k: gens[0][2][k] for k in ("model", "train") if isinstance(gens[0][2].get(k), dict)}
        logged = {"evaluate": dataclasses.asdict(cfg), "generators": [str(p) for p in generator],
                  "model_name": promote.model_name, **made_by}
        with tracking.stage_run("evaluate", track.experiment, logged, tracking.repo_root(), data_meta=meta,
                                system_metrics=track.system_metrics, params_file=params) as mlrun:
            rows, results = [], []
            for path, G, gcfg in gens:
                res, seconds = _evaluate_one(cfg, path, G.to(device), gcfg, ref, names, floor_data, judge_net,
                                             judge_ref, meta, samples if not results else None, mlrun)
                results.append(res)
                rows.append({"generator": str(path), **{k: res[k] for k in res if k in names or
                                                       k.endswith("_std")},
                             "judge_fid": res["judge"].get("fid"),
                             "coverage_entropy": res["judge"]["normalized_entropy"], "eval_seconds": seconds})
            _finish(cfg, promote, results[0], rows, gens[0], mlrun, metrics, plots, samples, candidate, tracking)

    def _evaluate_one(cfg: EvaluateConfig, path: Path, G: Any, gcfg: dict[str, Any], ref: Any, names: list[str],
                      floor_data: dict[str, Any], judge_net: Any, judge_ref: Any, meta: dict[str, Any],
                      grid_dir: Path | None, mlrun: Any) -> tuple[dict[str, Any], float]:
        from ganops.metrics.evaluation import evaluate_images
        from ganops.metrics.judge import judge_predict
        from ganops.models.shipped import sample_images
        from ganops.sampling import class_rows, write_grid

        t0 = time.perf_counter()
        images, labels = sample_images(G, gcfg, cfg.num_samples, cfg.seed)  # uint8 (N, C, H, W)
        typer.echo(f"evaluate: {path}: {len(images)} samples in {time.perf_counter() - t0:.1f} s")
        res = evaluate_images(images, ref, names, floor_data, judge=judge_net, judge_ref=judge_ref,
                              class_names=meta["class_names"], seed=cfg.seed, log=typer.echo,
                              batch_size=cfg.batch_size, device=next(G.parameters()).device,
                              judge_samples=cfg.judge_samples)
        seconds = time.perf_counter() - t0
        res = {"generator": str(path), "num_samples": cfg.num_samples, **res}
        if grid_dir is not None:
            k = meta["num_classes"]
            first = images[:cfg.grid_size]
            mlrun.log_artifact(write_grid(grid_dir / "grid.png", first, nrow=8), "samples")
            # one row per class: by the conditioning label, else by the judge's label (missing row = lost mode)
            by = labels if labels is not None else judge_predict(judge_net, images[:cfg.judge_samples])
            per_row = max(cfg.grid_size // k, 1)
            rows, _ = class_rows(images[:len(by)], by, k, per_row)
            if len(rows):
                mlrun.log_artifact(write_grid(grid_dir / "classes.png", rows, nrow=per_row), "samples")
        return res, seconds

    def _finish(cfg: EvaluateConfig, promote: PromoteConfig, res: dict[str, Any], rows: list[dict[str, Any]],
                cand: tuple[Path, Any, dict[str, Any]], mlrun: Any, metrics_path: Path, plots_path: Path,
                grid_dir: Path, candidate_path: Path, tracking: Any) -> None:
        import pandas as pd

        from ganops.io import write_csv, write_json

        fid_name = next(k for k in res if k.startswith("fid") and not k.endswith("_over_floor"))
        judge_res = res["judge"]
        summary = {k: v for k, v in res.items() if isinstance(v, int | float) and k != "num_samples"}
        summary |= {f"judge/{k}": judge_res[k] for k in JUDGE_SUMMARY if k in judge_res}
        write_metrics(metrics_path, summary, res, mlrun)
        write_csv(plots_path, pd.DataFrame([{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows]))
        flat = {k: float(v) for k, v in res.items() if isinstance(v, int | float) and k != "num_samples"}
        flat |= {f"floor/{k}": v for k, v in res.get("floor", {}).items()}
        flat |= {f"judge/{k}": float(v) for k, v in judge_res.items() if isinstance(v, int | float)}
        flat |= {f"judge/share/{k}": v for k, v in judge_res["class_shares"].items()}
        mlrun.log_metrics(flat | {"seconds": rows[0]["eval_seconds"]})  # `seconds`: every stage's wall time
        mlrun.log_artifact(plots_path)
        collapsed = judge_res["collapsed"]
        mlrun.set_tags({"ganops.mode_collapse": str(bool(collapsed)).lower(),
                        "ganops.collapsed_classes": ",".join(collapsed) or "-"})
        if collapsed:
            typer.echo(f"warning: mode collapse: the judge sees {', '.join(collapsed)} in under a quarter of "
                       f"their expected share of {judge_res['n']} samples", err=True)
        floor_txt = f" (real-data floor {res['floor'][fid_name]:.3f}, ×{res[f'{fid_name}_over_floor']:.2f})" \
            if "floor" in res else ""
        kid_name = fid_name.replace("fid", "kid", 1)
        kid_txt = f", {kid_name} {res[kid_name]:.5f} ± {res[kid_name + '_std']:.5f}" if kid_name in res else ""
        typer.echo(f"evaluate: {cand[0]}: {fid_name} {res[fid_name]:.3f}{floor_txt}{kid_txt}, class-coverage "
                   f"entropy {judge_res['normalized_entropy']:.3f} ({rows[0]['eval_seconds']:.0f} s)")
        info: dict[str, Any] = {"registered": False, "run_id": mlrun.run_id, "metrics": flat}
        if cfg.register:
            from ganops.gate import gate_inputs

            version = tracking.register_generator(mlrun, cand[0], promote.model_name, metrics=flat,
                                                  tag_metrics=gate_inputs(flat),
                                                  tags={"ganops.mode_collapse": str(bool(collapsed)).lower()})
            info |= {"registered": True, **dataclasses.asdict(version)}
            typer.echo(f"evaluate: registered {version.model_uri} (MLflow run {mlrun.run_id})")
        write_json(candidate_path, info)

    run(go, debug)
