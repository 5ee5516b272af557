"""The served generator (issue 24): a bound on rows and images per request, checked before any image is drawn;
`mlflow models serve` under a small concurrent load with hostile requests, every valid answer checked pixel for
pixel; and the signing key held as `ganops sample` holds it. Against a real sqlite registry and server."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shutil
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

# Importing the model code runs its set_model: harmless here, every model load sets it again.
import ganops.tracking.generator_model as served
from ganops.checkpoint import KEY_ENV
from ganops.config import ModelConfig
from ganops.models.generator import load_generator
from ganops.models.seeded_samples import sample_images
from tests.serving import (
    ModelServer,
    Reply,
    RssSampler,
    ServerError,
    hostile_requests,
    records_call,
    register_version,
    run_load,
    save_generator,
    valid_plans,
)

CONDITIONAL = {"model": {"conditional": True}, "num_classes": 10}
KEY, OTHER_KEY = "k" * 32, "o" * 32
HOSTILE_S = 10  # a refusal takes ~10-300 ms under this load; the unbounded model took minutes for these
# The loaded model at rest is ~1.0-1.1 GB (the mlflow command ~250 MB, uvicorn with torch and the model ~760 MB);
# this test's load (4 clients, rows of n <= 256, the first requests' allocations included) measured +300 MB over
# it. An unbounded request grows without limit (the issue: 1.7 GB and growing after 6 minutes).
LOAD_RSS_BOUND = 600 * 2**20


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, empty_store: Path):
    """A sqlite registry with two versions of a default-architecture generator (G of params.yaml's model:,
    seeded random weights): 1 unsigned, 2 signed with KEY. Yields (root, generator path, env without a key)."""
    root = tmp_path_factory.mktemp("serving")
    shutil.copy(empty_store, root / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    env.pop(KEY_ENV, None)
    model = dataclasses.asdict(ModelConfig(conditional=True))  # the default's G: conditional, width 64, latent 64
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv(KEY_ENV, raising=False)
        mp.setattr(sys, "path", list(sys.path))  # loading a model prepends its code dir
        path = save_generator(root / "generator.pt", model, seed=5)
        assert register_version(root, path) == "models:/gen/1"
        mp.setenv(KEY_ENV, KEY)  # registering serves the input example once: with the key it is signed with
        signed = save_generator(root / "signed.pt", model, seed=5, key=KEY.encode())
        assert register_version(root, signed) == "models:/gen/2"
        mp.delenv(KEY_ENV)
        yield root, path, env


def test_a_request_over_the_row_or_image_bound_is_refused_before_drawing() -> None:
    # the request: 4,000 rows × 1,024 images, 4.1 M images
    with pytest.raises(ValueError, match=r"request has 4000 rows, at most \d+ are allowed: split it"):
        served.parse_requests(pd.DataFrame({"seed": range(4000), "n": [1024] * 4000}), CONDITIONAL)
    rows = served.MAX_IMAGES // served.MAX_N + 1  # every row within MAX_N, the sum over the bound
    with pytest.raises(ValueError, match=rf"request asks for {rows * served.MAX_N} images \(the sum of n over its "
                                         rf"{rows} rows\), at most {served.MAX_IMAGES} are allowed"):
        served.parse_requests(pd.DataFrame({"seed": range(rows), "n": [served.MAX_N] * rows}), CONDITIONAL)
    with pytest.raises(ValueError, match=rf"request has {served.MAX_ROWS + 1} rows"):
        served.parse_requests(pd.DataFrame({"seed": range(served.MAX_ROWS + 1), "n": 1}), CONDITIONAL)
    assert 8 * 1024 > served.MAX_IMAGES and 4000 > served.MAX_ROWS  # what hostile_requests() sends is over them
    at_bounds = served.parse_requests(pd.DataFrame({"seed": range(served.MAX_ROWS),
                                                    "n": served.MAX_IMAGES // served.MAX_ROWS}), CONDITIONAL)
    assert len(at_bounds) == served.MAX_ROWS and sum(n for _, n, _ in at_bounds) == served.MAX_IMAGES


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))  # (H, W) gray


def _wrong_answers(replies: list[Reply], G: torch.nn.Module, config: dict) -> list[str]:
    """What differs between each valid reply and sample_images for its rows: count, columns, pixels."""
    wrong = []
    for reply in replies:
        if reply.error:
            wrong.append(f"{reply.call.name}: {reply.error}")
            continue
        out = pd.DataFrame(json.loads(reply.body)["predictions"])
        for request, row in enumerate(reply.call.records):
            cls = row.get("class", -1)
            images, labels = sample_images(G, config, row["n"], row["seed"], None if cls == -1 else cls)
            got = out[out["request"] == request]
            columns = got[["index", "seed", "class"]].values.tolist()
            if columns != [[i, row["seed"], int(labels[i])] for i in range(row["n"])]:
                wrong.append(f"{reply.call.name}, row {row}: columns {columns[:3]}...")
            elif not torch.equal(torch.from_numpy(np.stack([_decode(s) for s in got["image"]])), images[:, 0]):
                wrong.append(f"{reply.call.name}, row {row}: images differ from sample_images")
    return wrong


@pytest.mark.slow
def test_the_server_answers_every_valid_request_under_load_and_refuses_hostile_ones_at_once(versions) -> None:
    root, path, env = versions
    plans = valid_plans(4, 15, seed=1)  # 60 requests, 1-4 rows of n in {1, 16, 64, 256}, mixed classes
    hostile = hostile_requests(timeout=HOSTILE_S)
    with ModelServer("models:/gen/1", root, env) as server, RssSampler(server) as rss:
        replies = run_load(server.url, plans, hostile, hostile_gap=0.2, keep_bodies=True)
    refused = [r for r in replies if r.call.records is None]
    problems = [f"{r.call.name}: {r.error} after {r.seconds:.2f} s" for r in refused if r.error]
    assert not problems, "\n".join(problems)  # each answered 400 within HOSTILE_S, naming its reason
    valid = [r for r in replies if r.call.records is not None]
    assert len(valid) == 60
    G, config = load_generator(path)
    assert _wrong_answers(valid, G, config) == []
    grew = rss.peak_bytes - rss.first_bytes
    assert grew < LOAD_RSS_BOUND, f"server grew by {grew / 2**20:.0f} MB under load"


@pytest.mark.slow
def test_concurrent_requests_at_the_image_bound_wait_their_turn_and_memory_stays_bounded(versions) -> None:
    """8 clients each asking for MAX_IMAGES at once: MLflow runs them all concurrently, the model draws on
    MAX_DRAWS threads of its own. Measured on 2 cores: one client +175 MB, these 8 +383-466 MB; drawing on
    MLflow's request threads +800 MB (a semaphore on them +613 MB: each thread's malloc arena keeps its peak)."""
    root, _, env = versions
    rows = [{"seed": 0, "n": served.MAX_N}] * (served.MAX_IMAGES // served.MAX_N)
    plans = [[records_call([{**r, "seed": c * 10 + i} for i, r in enumerate(rows)])] * 2 for c in range(8)]
    with ModelServer("models:/gen/1", root, env) as server, RssSampler(server) as rss:
        replies = run_load(server.url, plans)
    assert [r.error for r in replies if r.error] == [] and len(replies) == 16
    grew = rss.peak_bytes - rss.first_bytes
    assert grew < LOAD_RSS_BOUND, f"server grew by {grew / 2**20:.0f} MB"


def test_the_served_model_holds_a_registered_generator_to_the_signing_key(versions,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, env = versions
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    one = pd.DataFrame({"seed": [3], "n": [2], "class": [4]})
    assert len(mlflow.pyfunc.load_model("models:/gen/1").predict(one)) == 2  # no key: unsigned loads, as before
    monkeypatch.setenv(KEY_ENV, KEY)
    assert mlflow.pyfunc.load_model("models:/gen/2").predict(one)["class"].tolist() == [4, 4]
    with pytest.raises(Exception, match="checkpoint is not signed and a signing key is set"):
        mlflow.pyfunc.load_model("models:/gen/1")
    monkeypatch.setenv(KEY_ENV, OTHER_KEY)
    with pytest.raises(Exception, match="checkpoint signature does not match the key"):
        mlflow.pyfunc.load_model("models:/gen/2")
    # and the server does not start on it
    with pytest.raises(ServerError, match="exited") as refused:
        ModelServer("models:/gen/2", root, {**env, KEY_ENV: OTHER_KEY}).start()
    assert "checkpoint signature does not match the key (GANOPS_CHECKPOINT_KEY)" in str(refused.value)
