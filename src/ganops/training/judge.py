"""Training the judge (ganops.metrics.judge.JudgeNet) on the prepared train split: the loop, its batches
and the test accuracy it reports. The network, its checkpoint and the scores it gives live in metrics/judge.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganops.config import RuntimeConfig
from ganops.metrics.judge import JudgeNet, judge_predict
from ganops.runtime import autocast, progress_bar, seed_everything, setup_runtime, to_model_input
from ganops.training.common import shuffled_batches


def _check_split(name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"{name}: expected uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name}: {len(x)} images for {len(y)} labels")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"{name}: labels span [{int(y.min())}, {int(y.max())}], expected [0, {num_classes})")


def train_judge(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                num_classes: int, epochs: int = 2, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                width: int = 32, runtime: RuntimeConfig | None = None,
                log: Callable[[str], Any] = print) -> tuple[JudgeNet, dict[str, Any]]:
    """Train a JudgeNet on uint8 (N, C, S, S) images with int64 (N,) labels; return (model in eval mode, metrics).

    AdamW with a one-cycle learning rate, bf16 autocast and channels_last per `runtime` (default
    RuntimeConfig(): auto device/precision). Deterministic on CPU for a fixed seed and thread count.
    Defaults reach 91.2 % test accuracy on Fashion-MNIST in 2 epochs: ~33 s on 2 free CPU cores,
    3-6× that when other jobs share the cores.
    metrics: test_accuracy, per_class_accuracy (list, K), train_loss, train_accuracy (last epoch),
    train_seconds (optimisation only), eval_seconds, epochs, steps, img_per_s.
    """
    if epochs < 1 or batch_size < 2 or not 0 < lr < 1:
        raise ValueError(f"need epochs >= 1, batch_size >= 2, 0 < lr < 1; got {epochs}, {batch_size}, {lr}")
    train_y, test_y = torch.as_tensor(train_y, dtype=torch.int64), torch.as_tensor(test_y, dtype=torch.int64)
    _check_split("train", train_x, train_y, num_classes)
    _check_split("test", test_x, test_y, num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"train images {tuple(train_x.shape[1:])} and test images {tuple(test_x.shape[1:])} differ")
    runtime = runtime or RuntimeConfig()
    gen = seed_everything(seed)  # also seeds dropout (global RNG) and the initial weights
    device, amp = setup_runtime(runtime)
    _, c, h, _ = train_x.shape
    model = JudgeNet(c, h, num_classes, width).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = len(shuffled_batches(len(train_x), batch_size, torch.Generator().manual_seed(0)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    log(f"judge: {len(train_x)} images {c}×{h}×{h}, {num_classes} classes, width {width}, "
        f"{epochs} epochs × {steps_per_epoch} steps, device {device}, autocast {amp or 'off'}, "
        f"channels_last {runtime.channels_last}")
    train_seconds = eval_seconds = 0.0
    step, loss_sum, correct, seen = 0, 0.0, 0, 0
    test_acc, per_class = float("nan"), [float("nan")] * num_classes
    with progress_bar(epochs * steps_per_epoch, "judge") as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for idx in shuffled_batches(len(train_x), batch_size, gen):
                x = to_model_input(train_x[idx], device, runtime.channels_last)  # (B, C, S, S)
                y = train_y[idx].to(device)  # (B,)
                with autocast(device, amp):
                    logits = model(x)  # (B, K)
                loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.advance(1, info=f"epoch {epoch} loss {loss.item():.3f}")
            train_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            model.to(memory_format=torch.contiguous_format)  # score in the layout the judge ships in (below)
            test_acc, per_class = _accuracy(judge_predict(model, test_x), test_y, num_classes)
            if runtime.channels_last:
                model.to(memory_format=torch.channels_last)  # same Parameter objects: the optimiser still holds them
            eval_seconds += time.perf_counter() - t0
            log(f"judge epoch {epoch}/{epochs}: train loss {loss_sum / seen:.4f} acc {correct / seen:.4f}, "
                f"test acc {test_acc:.4f} ({train_seconds:.1f} s)")
    # ship in the default layout: a judge loaded from disk has it, and conv kernels round differently
    # per layout, so a fresh and a reloaded judge give bit-identical features and the same accuracy
    model = model.to(memory_format=torch.contiguous_format).eval()
    metrics = {"test_accuracy": test_acc, "per_class_accuracy": per_class, "train_loss": loss_sum / max(seen, 1),
               "train_accuracy": correct / max(seen, 1), "train_seconds": train_seconds,
               "eval_seconds": eval_seconds, "epochs": epochs, "steps": step,
               "img_per_s": step * batch_size / max(train_seconds, 1e-9)}
    return model, metrics


def _accuracy(pred: np.ndarray, labels: torch.Tensor, num_classes: int) -> tuple[float, list[float]]:
    """(overall accuracy, per-class accuracy (K,), NaN for a class absent from labels)."""
    y = labels.numpy()
    hit = pred == y  # (N,)
    per_class = [float(hit[y == k].mean()) if (y == k).any() else float("nan") for k in range(num_classes)]
    return float(hit.mean()), per_class
