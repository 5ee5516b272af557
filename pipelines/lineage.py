"""`ganops lineage`: one screen on where a registered generator came from and how good it is."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ganops.gate import MIN_SHARE, fid_key, kid_key
from pipelines.common import DebugOpt, run

SHOWN_TRAIN = ("epochs", "batch_size", "loss", "g_lr", "d_lr", "beta1", "d_steps", "ema_decay", "r1_weight",
               "diffaugment", "init_from_autoencoder", "precision", "seed")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render(d: dict[str, Any]) -> str:
    tags, metrics, gen = d["tags"], d["metrics"], d["generator"]
    fid = fid_key(metrics)
    kid = kid_key(fid) if fid else None
    lines = [f"{d['name']} v{d['version']}" + (f"  @{' @'.join(d['aliases'])}" if d["aliases"] else "")
             + f"   (store {d['tracking_uri']})"]
    lines += [f"  warning   {w}" for w in d.get("warnings", [])]  # a run whose record is not whole, first
    if fid:
        q = f"  quality   {fid} {metrics[fid]:.3f}"
        if f"floor/{fid}" in metrics:
            q += f"  (real-data floor {metrics[f'floor/{fid}']:.3f}, ×{metrics[fid] / metrics[f'floor/{fid}']:.2f})"
        if kid in metrics:
            q += f"   {kid} {metrics[kid]:.5f} ± {metrics.get(kid + '_std', float('nan')):.5f}"
        lines.append(q)
    if "judge/normalized_entropy" in metrics:
        lines.append(f"  coverage  entropy {metrics['judge/normalized_entropy']:.3f}, min class share "
                     f"{metrics.get(MIN_SHARE, float('nan')):.2f}× expected, mode collapse "
                     f"{tags.get('ganops.mode_collapse', '?')}")
    if "ganops.decision" in tags:
        lines.append(f"  gate      {tags['ganops.decision']}: {tags.get('ganops.decision_reason', '')}")
    train_tags = d["train_run"].get("tags", {})
    commit = train_tags.get("ganops.git_commit", tags.get("ganops.git_commit", "?"))
    dirty = train_tags.get("ganops.git_dirty", tags.get("ganops.git_dirty", "?"))
    lines += [
        f"  git       {commit} (dirty: {dirty}) at training; evaluated at {tags.get('ganops.git_commit', '?')}",
        f"  data      {gen.get('data_hash', tags.get('ganops.data_hash', '?'))}",
        f"  params    train {train_tags.get('ganops.params_hash', '?')[:16]}, "
        f"evaluate {tags.get('ganops.params_hash', '?')[:16]}; pipeline {tags.get('ganops.pipeline', '?')[:16]}",
        f"  runs      train {d['train_run'].get('run_id', gen.get('mlflow_run_id', '?'))}, "
        f"evaluate {d['evaluate_run_id']}",
        "  model     " + ", ".join(f"{k}={_fmt(v)}" for k, v in gen.get("model", {}).items()),
        "  train     " + ", ".join(f"{k}={_fmt(gen['train'][k])}" for k in SHOWN_TRAIN if k in gen.get("train", {})),
    ]
    return "\n".join(lines)


def main(
    model: Annotated[str, typer.Argument(help="models:/<name>@<alias> or models:/<name>/<version>")] = (
        "models:/ganops-generator@champion"),
    as_json: Annotated[bool, typer.Option("--json", help="everything, as JSON")] = False,
    debug: DebugOpt = False,
) -> None:
    """Which commit, data and params produced a registered generator, and its metrics."""

    def go() -> None:
        from ganops.tracking.inspect import describe

        d = describe(model)
        typer.echo(json.dumps(d, indent=2, sort_keys=True, default=str) if as_json else render(d))

    run(go, debug)
