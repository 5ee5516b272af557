"""Evaluation of a generator against cached reference statistics: what `ganops evaluate` computes.

Pure: tensors and stats in, plain dicts out; no params.yaml, no MLflow. Three costs to know on a
2-core CPU: Inception ≈ 13 img/s (10k images ≈ 13 min, the only expensive part), generation
≈ 3 000 img/s, the judge ≈ 10 000 img/s.

    ref = FeatureStats.load("stats/test_inception.safetensors", expect={"source_hash": h})
    floor = real_data_floor(train_x, ref, ["fid10k", "kid10k"], 10_000, seed=0)  # metrics/floor.py, once per data
    res = evaluate_images(images, ref, ["fid10k", "kid10k"], floor, judge=..., ...)
    res["fid10k"], res["floor"]["fid10k"], res["judge"]["normalized_entropy"]

The real-data floor is the same metric between N *training* images and the test reference: the
score a perfect generator (one that reproduces the data distribution) would get at this N. FID is
biased upward at finite N, so a model FID means most beside its floor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ganops.errors import GanopsError
from ganops.metrics.fid import FeatureStats
from ganops.metrics.inception import inception_features
from ganops.metrics.names import MetricName
from ganops.metrics.registry import compute_metrics, flatten


def evaluate_images(images: torch.Tensor, ref: FeatureStats, names: Sequence[str], floor: dict[str, Any] | None,
                    judge: Any | None = None, judge_ref: FeatureStats | None = None,
                    class_names: Sequence[str] | None = None, seed: int = 0, log: Callable[[str], Any] = print,
                    batch_size: int = 8, device: str | torch.device = "cpu",
                    judge_samples: int | None = None) -> dict[str, Any]:
    """Every evaluation number of generated uint8 images (N, C, H, W), N >= each metric's n.

    Returns a JSON-ready dict: the metrics by protocol name ("fid10k": 23.4, "kid10k", "kid10k_std",
    ...), "floor" (the same names for real training images, when given) and "<fid>_over_floor",
    "judge" (test accuracy, judge FID, class coverage), and "protocol" (network, resize, n_gen, n_ref,
    splits for every value). Deterministic for fixed images: no timings inside.
    """
    feats = inception_features(images, f"evaluate: inception ({len(images)} generated)", log, batch_size, device)
    out = compute_metrics(names, feats, ref, seed=seed)
    result: dict[str, Any] = dict(flatten(out))
    protocol = {k: v["protocol"] for k, v in out.items()}
    if floor is not None:
        missing = [k for k in result if k not in floor["metrics"]]
        if missing:
            raise GanopsError(f"the real-data floor has no {', '.join(missing)} (it was computed for "
                              f"{', '.join(floor['metrics'])}); rerun the floor stage (dvc repro)")
        result["floor"] = {k: floor["metrics"][k] for k in result}
        protocol |= {f"floor/{k}": v for k, v in floor["protocol"].items() if k in out}
        for name in out:
            if MetricName.parse(name).kind == "fid" and floor["metrics"][name] > 0:
                result[f"{name}_over_floor"] = result[name] / floor["metrics"][name]
    if judge is not None:
        result["judge"] = judge_report(judge, images[:judge_samples or len(images)], judge_ref, class_names)
        protocol["judge"] = {"network": "ganops judge", "n_gen": result["judge"]["n"],
                             "n_ref": judge_ref.n if judge_ref is not None else 0,
                             "ref_split": "test", "data_hash": judge.meta.get("data_hash")}
    result["protocol"] = protocol
    return result


def judge_report(judge: Any, images: torch.Tensor, judge_ref: FeatureStats | None,
                 class_names: Sequence[str] | None) -> dict[str, Any]:
    """The judge's view of uint8 images (N, C, H, W): test accuracy, judge FID, class coverage."""
    from ganops.metrics.judge import class_coverage, judge_fid, judge_predict

    k = judge.num_classes
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    cov = class_coverage(judge_predict(judge, images), k, names)
    report: dict[str, Any] = {
        "test_accuracy": float(judge.meta.get("test_accuracy", math.nan)),
        "n": cov["n"],
        "normalized_entropy": cov["normalized_entropy"],
        "min_share_ratio": cov["min_share_ratio"],
        "collapsed_classes": len(cov["collapsed"]),
        "collapsed": cov["collapsed"],
        "class_shares": cov["shares"],
    }
    if judge_ref is not None:
        report["fid"] = judge_fid(judge, images, judge_ref)
    return report


def read_floor(path: Path, names: Sequence[str], meta: dict[str, Any]) -> dict[str, Any]:
    """The floor record (`ganops floor`'s _detail.json), refused if it was made for other data or another
    N or metric list than `names`: a ratio to it would compare unlike numbers."""
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
