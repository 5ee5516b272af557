"""ganops.metrics.judge: the classifier that judges generated samples — training, checkpoint, coverage, judge FID.

Trained on a 3 000-image subset of the real Fashion-MNIST train split for one epoch (a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ganops.checkpoint import CheckpointError, save_checkpoint
from ganops.config import ModelConfig, RuntimeConfig
from ganops.metrics.judge import (
    JudgeNet,
    class_coverage,
    judge_features,
    judge_fid,
    judge_predict,
    judge_reference_stats,
    judge_score_fn,
    load_judge,
    save_judge,
)
from ganops.training.judge import train_judge
from tests.conftest import DEBIAN_FASHION

NAMES = [f"class{k}" for k in range(10)]
CPU = RuntimeConfig(device="cpu")


@pytest.fixture(scope="module")
def fashion() -> dict[str, torch.Tensor]:
    """3 000 train and 1 000 test images of the real Fashion-MNIST (Debian's IDX files)."""
    if not DEBIAN_FASHION.is_dir():
        pytest.skip(f"{DEBIAN_FASHION} missing (apt-get install dataset-fashion-mnist; setup.sh does)")
    from ganops.data.sources import load_idx_dir

    ds = load_idx_dir(DEBIAN_FASHION, "fashion-mnist")
    t = torch.from_numpy
    return {"x": t(ds.train_images[:3000].copy()), "y": t(ds.train_labels[:3000].copy()),
            "tx": t(ds.test_images[:1000].copy()), "ty": t(ds.test_labels[:1000].copy())}


@pytest.fixture(scope="module")
def judged(fashion: dict[str, torch.Tensor]) -> tuple[JudgeNet, dict]:
    return train_judge(fashion["x"], fashion["y"], fashion["tx"], fashion["ty"], 10, epochs=1,
                       runtime=CPU, seed=0, log=lambda _: None)


def noise_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 64), (3, 64)])
def test_judgenet_gives_logits_and_features_for_every_supported_shape(channels: int, size: int) -> None:
    net = JudgeNet(channels, size, num_classes=7, width=8).eval()
    x = torch.rand(3, channels, size, size) * 2 - 1  # (B, C, S, S) in [-1, 1]
    assert net(x).shape == (3, 7)
    assert net.features(x).shape == (3, 128)
    with pytest.raises(ValueError, match="image_size"):
        JudgeNet(channels, 48, 7)


def test_one_short_epoch_beats_chance_clearly(judged: tuple[JudgeNet, dict]) -> None:
    model, metrics = judged
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1
    assert len(metrics["per_class_accuracy"]) == 10
    assert metrics["steps"] == 3000 // 128 and metrics["train_seconds"] > 0
    assert not model.training


def test_same_seed_gives_identical_weights(fashion: dict[str, torch.Tensor]) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        model, _ = train_judge(fashion["x"][:384], fashion["y"][:384], fashion["tx"][:64], fashion["ty"][:64], 10,
                               epochs=1, batch_size=64, width=8, seed=seed, runtime=CPU, log=lambda _: None)
        return model.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_save_load_round_trip_gives_identical_logits(judged: tuple[JudgeNet, dict], fashion: dict,
                                                      tmp_path: Path) -> None:
    model, metrics = judged
    path = save_judge(tmp_path / "judge.pt", model,
                      {"class_names": NAMES, "test_accuracy": metrics["test_accuracy"], "data_hash": "abc123"})
    loaded = load_judge(path)
    assert loaded.meta["class_names"] == NAMES and loaded.meta["data_hash"] == "abc123"
    assert loaded.config == model.config and not loaded.training
    x = fashion["tx"][:200].float() / 127.5 - 1  # (200, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), loaded(x))
    feats = judge_features(model, fashion["tx"][:200])  # (200, 128)
    np.testing.assert_array_equal(feats, judge_features(loaded, fashion["tx"][:200]))
    assert (judge_predict(loaded, fashion["tx"]) == fashion["ty"].numpy()).mean() == metrics["test_accuracy"]


def test_altered_or_foreign_checkpoint_is_refused(judged: tuple[JudgeNet, dict], tmp_path: Path) -> None:
    model, _ = judged
    path = save_judge(tmp_path / "judge.pt", model, {"class_names": NAMES})
    payload = torch.load(path, weights_only=True)
    payload["state"]["model"]["head.1.bias"][0] += 1.0  # edit one weight, keep the old digest
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="digest"):
        load_judge(path)
    other = save_checkpoint(tmp_path / "g.pt", "generator", {"model": {}}, {})
    with pytest.raises(CheckpointError, match="expected 'judge'"):
        load_judge(other)
    with pytest.raises(ValueError, match="disagrees"):
        save_judge(tmp_path / "bad.pt", model, {"num_classes": 3})


def test_uniform_predictions_have_full_coverage() -> None:
    cov = class_coverage(np.arange(1000) % 10, 10, NAMES)
    assert cov["normalized_entropy"] == pytest.approx(1.0)
    assert cov["min_share_ratio"] == pytest.approx(1.0)
    assert cov["collapsed"] == []
    assert cov["counts"]["class3"] == 100 and cov["shares"]["class3"] == pytest.approx(0.1)


def test_single_class_predictions_flag_every_other_class_as_collapsed() -> None:
    cov = class_coverage(np.full(500, 4), 10, NAMES)
    assert cov["normalized_entropy"] == 0.0
    assert cov["min_share_ratio"] == 0.0
    assert cov["collapsed"] == [n for n in NAMES if n != "class4"]
    with pytest.raises(ValueError, match="span"):
        class_coverage(np.array([0, 10]), 10, NAMES)


def test_collapse_threshold_is_a_quarter_of_the_uniform_share() -> None:
    pred = np.concatenate([np.repeat(np.arange(9), 110), np.full(24, 9)])  # class 9: 24/1014 ≈ 0.24 × 1/10
    assert class_coverage(pred, 10)["collapsed"] == ["9"]
    pred = np.concatenate([np.repeat(np.arange(9), 110), np.full(30, 9)])  # 30/1020 ≈ 0.29 × 1/10
    assert class_coverage(pred, 10)["collapsed"] == []


def test_judge_fid_is_zero_on_the_reference_and_large_on_noise(judged: tuple[JudgeNet, dict], fashion: dict) -> None:
    model, _ = judged
    ref = judge_reference_stats(model, fashion["tx"], meta={"split": "test"})
    assert ref.dim == 128 and ref.n == 1000 and ref.meta["network"] == "judge"
    self_fid = judge_fid(model, fashion["tx"], ref)
    real_fid = judge_fid(model, fashion["x"][:1000], ref)  # other real images: small but > 0
    noise_fid = judge_fid(model, noise_images(1000), ref)
    assert abs(self_fid) < 1e-6 * np.trace(ref.sigma) + 1e-6
    assert noise_fid > 10 * real_fid > 0
    preds = judge_predict(model, fashion["tx"])
    assert preds.dtype == np.int64 and preds.shape == (1000,)
    with pytest.raises(ValueError, match="uint8"):
        judge_features(model, fashion["tx"].float())


def test_score_fn_is_repeatable_and_leaves_the_generator_mode_alone(judged: tuple[JudgeNet, dict],
                                                                   fashion: dict) -> None:
    from ganops.models.generator import build_generator

    model, _ = judged
    cfg = ModelConfig(latent_dim=16, g_width=8, conditional=True, spectral_norm=False, d_hidden=0)
    torch.manual_seed(0)
    G = build_generator(cfg, 28, 1, num_classes=10).train()
    score = judge_score_fn(model, fashion["tx"], n=200, latent_dim=16, latent_dist="normal",
                           num_classes=10, conditional=True, seed=3)
    a, b = score(G), score(G)
    assert np.isfinite(a) and a == b and a > 0
    assert G.training
