"""Evaluation of a generator against cached reference statistics: what `ganops evaluate` computes.

Pure: tensors and stats in, plain dicts out; no params.yaml, no MLflow. Three costs to know on a
2-core CPU: Inception ≈ 13 img/s (10k images ≈ 13 min, the only expensive part), generation
≈ 3 000 img/s, the judge ≈ 10 000 img/s.

    ref = FeatureStats.load("stats/test_inception.safetensors", expect={"source_hash": h})
    floor = real_data_floor(train_x, ref, ["fid10k", "kid10k"], seed=0)            # once per data version
    res = evaluate_images(images, ref, ["fid10k", "kid10k"], floor, judge=..., ...)
    res["fid10k"], res["floor"]["fid10k"], res["judge"]["normalized_entropy"]

The real-data floor is the same metric between N *training* images and the test reference: the
score a perfect generator (one that reproduces the data distribution) would get at this N. FID is
biased upward at finite N, so a model FID means most beside its floor.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganops.errors import GanopsError
from ganops.metrics.fid import FeatureStats
from ganops.metrics.inception import ProgressFn, extract_features
from ganops.metrics.registry import compute_metrics, flatten, metric_protocol

LOG_EVERY_S = 60.0  # a progress line this often when stderr is not a terminal (DVC logs, CI)


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


@contextlib.contextmanager
def progress(description: str, total: int, log: Callable[[str], Any]) -> Iterator[ProgressFn]:
    """A ProgressFn(done, total) for `extract_features`: a rich bar with ETA on a terminal, else a log
    line every LOG_EVERY_S seconds (rate and ETA), and always a final line with the rate."""
    from ganops.runtime import progress_bar

    t0 = time.perf_counter()
    state = {"done": 0, "logged": t0}
    tty = sys.stderr.isatty()
    with progress_bar(total, description) as bar:

        def update(done: int, _total: int | None) -> None:
            bar.advance(done - state["done"])
            state["done"] = done
            now = time.perf_counter()
            if not tty and now - state["logged"] >= LOG_EVERY_S and done < total:
                rate = done / (now - t0)
                log(f"{description}: {done}/{total} images, {rate:.1f} img/s, eta {_eta((total - done) / rate)}")
                state["logged"] = now

        yield update
    seconds = time.perf_counter() - t0
    log(f"{description}: {state['done']} images in {_eta(seconds)} ({state['done'] / max(seconds, 1e-9):.1f} img/s)")


def inception_features(images: torch.Tensor, description: str, log: Callable[[str], Any],
                       batch_size: int, device: str | torch.device = "cpu") -> np.ndarray:
    """Inception pool3 features float64 (N, 2048) of uint8 images (N, C, H, W), with progress and ETA."""
    with progress(description, len(images), log) as cb:
        return extract_features(images, batch_size=batch_size, device=device, progress=cb)


def floor_indices(n_train: int, n: int, seed: int) -> torch.Tensor:
    """Which n of n_train training images the floor uses: the first n of a seeded permutation."""
    if n > n_train:
        raise GanopsError(f"the real-data floor needs {n} training images (evaluate.num_samples) but the "
                          f"prepared train split has {n_train}; lower evaluate.num_samples")
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:n]


def real_data_floor(train_x: torch.Tensor, ref: FeatureStats, names: Sequence[str], n: int, seed: int,
                    log: Callable[[str], Any] = print, batch_size: int = 8,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """The metrics `names` (all with N = n) of n seeded training images (uint8 (N, C, H, W)) vs `ref`.

    Returns {"metrics": {name: value}, "protocol": {name: {...}}, "n": n, "seed": seed}.
    """
    idx = floor_indices(len(train_x), n, seed)
    feats = inception_features(train_x[idx], "floor: inception (train images)", log, batch_size, device)
    out = compute_metrics(names, feats, ref, seed=seed)
    return {"metrics": flatten(out), "protocol": floor_protocols(names, ref, seed), "n": n, "seed": seed}


def floor_protocols(names: Sequence[str], ref: FeatureStats, seed: int) -> dict[str, dict[str, Any]]:
    """Each floor metric's protocol: the model metric's, with real training images on the generated side."""
    return {name: metric_protocol(name, ref, seed) | {"gen_split": "train"} for name in names}


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
            if name.startswith("fid") and floor["metrics"][name] > 0:
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
