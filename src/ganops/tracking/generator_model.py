"""The registered generator as an MLflow pyfunc "model from code": MLflow stores this file and runs it at load time.

Nothing is pickled: MLflow copies this file and the `ganops` package (code_paths) into the model and
executes the file on load; `load_context` reads the generator checkpoint artifact with
`torch.load(weights_only=True)` (see `ganops.models.generator.load_generator`). So a registered version
loads with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false, and where ganops is not installed.

    model = mlflow.pyfunc.load_model("models:/ganops-generator/3")
    out = model.predict(pd.DataFrame({"seed": [7, 8], "n": [16, 4], "class": [3, -1]}))
    # one row per image: request, index, seed, class, image (base64 PNG)

Images are exactly `sample_images(G, config, n, seed, class_id)`, the same pixels `ganops sample` and the
evaluate stage draw for that (seed, n, class). A request is refused whole (RequestError: a ValueError, and
HTTP 400 naming the reason from `mlflow models serve`) before any image is drawn if a row is invalid or it
asks for more than MAX_ROWS rows or MAX_IMAGES images. With GANOPS_CHECKPOINT_KEY set, the checkpoint must
be signed with that key, as for `ganops sample`, or loading fails.

Do not import this module from ganops code: running it registers the model with MLflow (`set_model`),
which is only meant to happen inside MLflow's loader.
"""

from __future__ import annotations

import base64
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from PIL import Image

from ganops.checkpoint import key_from_env
from ganops.models.generator import load_generator
from ganops.models.seeded_samples import sample_images

ARTIFACT_KEY = "generator"  # the checkpoint's key in the model's `artifacts`
# What one request may ask for, checked before any image is drawn (the issue: one request of 4,000 rows
# × 1,024 ran for minutes and grew past 1.7 GB). Measured on the default generator (28×28 gray, 2-core Xeon):
# ~3,500 img/s, so MAX_IMAGES takes ~1-1.2 s and its answer is ~2.5 MB of JSON (~600 B an image as base64 PNG,
# against 3 KB of float tensor that is freed batch by batch); a request's peak memory, ~100-150 MB, is G's
# activations for one batch of up to 500 images (sample_images' batch). A row costs ~1.4 ms besides its
# images, so MAX_ROWS adds at most ~0.35 s. MAX_IMAGES is also the most `ganops sample -n` draws.
MAX_N = 1024  # images per request row
MAX_IMAGES = 4096  # images per request: the sum of n over its rows
MAX_ROWS = 256  # rows per request
# Threads that draw, per server process. MLflow's server runs up to min(32, cores + 4) requests at once, each
# up to ~150 MB at MAX_IMAGES, and each request thread's allocations stay in its own malloc arena after it
# ends (8 such requests left +800 MB on 2 cores; a semaphore alone still +600 MB). Drawing on MAX_DRAWS
# threads of our own bounds a process at ~MAX_DRAWS × 150 MB over its resting size on any machine, at no
# cost in throughput: each draw already uses every core (torch's intra-op threads).
MAX_DRAWS = 2
RANDOM_CLASS = -1  # `class` value (like a missing one) asking for random classes
OUTPUT_COLUMNS = ["request", "index", "seed", "class", "image"]


class RequestError(MlflowException, ValueError):
    """A request the model refuses. A ValueError to Python callers; an MlflowException so that
    `mlflow models serve` answers 400 with this message (any other exception becomes a generic
    "unexpected error" whose reason only its stack trace names)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def _as_int(value: Any, column: str, row: int) -> int:
    """An integral number as int; RequestError naming the row and column otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise RequestError(f"row {row}: {column} must be an integer, got {value!r}")
    if isinstance(value, Integral):
        return int(value)
    if not math.isfinite(value) or value != int(value):
        raise RequestError(f"row {row}: {column} must be an integer, got {value!r}")
    return int(value)


def _class_id(value: Any, row: int, config: dict[str, Any]) -> int | None:
    """The requested class, or None for random classes (missing, NaN or -1)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    class_id = _as_int(value, "class", row)
    if class_id == RANDOM_CLASS:
        return None
    if not config["model"].get("conditional"):
        raise RequestError(f"row {row}: class {class_id} given, but this generator is unconditional "
                           f"(omit class or use {RANDOM_CLASS})")
    k = int(config["num_classes"])
    if not 0 <= class_id < k:
        raise RequestError(f"row {row}: class must be in [0, {k}) or {RANDOM_CLASS} for random, got {class_id}")
    return class_id


def parse_requests(model_input: Any, config: dict[str, Any]) -> list[tuple[int, int, int | None]]:
    """(seed, n, class_id or None) per input row. The whole request is checked (every row, MAX_ROWS,
    MAX_IMAGES) before any image is drawn; RequestError (a ValueError) names the row or the bound."""
    df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    if missing := [c for c in ("seed", "n") if c not in df.columns]:
        raise RequestError(f"generator input needs columns seed and n (class optional); missing {missing}")
    if len(df) > MAX_ROWS:
        raise RequestError(f"request has {len(df)} rows, at most {MAX_ROWS} are allowed: split it")
    classes = df["class"].tolist() if "class" in df.columns else [None] * len(df)
    requests = []
    for row, (seed, n, cls) in enumerate(zip(df["seed"].tolist(), df["n"].tolist(), classes, strict=True)):
        n = _as_int(n, "n", row)
        if not 1 <= n <= MAX_N:
            raise RequestError(f"row {row}: n must be in 1..{MAX_N}, got {n}")
        requests.append((_as_int(seed, "seed", row), n, _class_id(cls, row, config)))
    if (total := sum(n for _, n, _ in requests)) > MAX_IMAGES:
        raise RequestError(f"request asks for {total} images (the sum of n over its {len(requests)} rows), "
                           f"at most {MAX_IMAGES} are allowed: split it")
    return requests


def png_base64(image: torch.Tensor) -> str:
    """uint8 (C, H, W) with C 1 or 3 -> base64 PNG (gray or RGB)."""
    hwc = image.permute(1, 2, 0).cpu().numpy()  # (H, W, C)
    pixels = hwc[:, :, 0] if hwc.shape[2] == 1 else hwc  # (H, W) gray or (H, W, 3) RGB
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Seeded samples of a ganops generator: one output row per image, as base64 PNG."""

    def load_context(self, context: Any) -> None:
        # Held to the signing key as `ganops sample` is: with GANOPS_CHECKPOINT_KEY set, an unsigned or
        # otherwise signed checkpoint raises CheckpointError here, so `mlflow models serve` does not start.
        self.G, self.config = load_generator(context.artifacts[ARTIFACT_KEY], key=key_from_env(os.environ))
        self.draws = ThreadPoolExecutor(MAX_DRAWS, thread_name_prefix="ganops-draw")

    # A DataFrame hint: MLflow passes the input through as is (other hints make it wrap and convert
    # predict; none makes it warn at every load).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        requests = parse_requests(model_input, self.config)  # a refusal does not wait for a draw
        return self.draws.submit(self._draw, requests).result()

    def _draw(self, requests: list[tuple[int, int, int | None]]) -> pd.DataFrame:
        rows: dict[str, list[Any]] = {c: [] for c in OUTPUT_COLUMNS}
        for request, (seed, n, class_id) in enumerate(requests):
            images, labels = sample_images(self.G, self.config, n, seed, class_id)  # (n, C, H, W), (n,) | None
            rows["request"] += [request] * n
            rows["index"] += list(range(n))
            rows["seed"] += [seed] * n
            rows["class"] += labels.tolist() if labels is not None else [RANDOM_CLASS] * n
            rows["image"] += [png_base64(img) for img in images]
        out = pd.DataFrame(rows)
        return out.astype({c: "int64" for c in OUTPUT_COLUMNS[:-1]})


mlflow.models.set_model(GeneratorModel())
