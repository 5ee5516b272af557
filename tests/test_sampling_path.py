"""One way to draw "n seeded samples from G": models.seeded_samples.seeded_latents + generate_batches, used by the
shipped sampler, the judge scorer and the pixel scorer alike; and the data-hash check every stage shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganops.config import ModelConfig
from ganops.data.prepared import check_trained_on
from ganops.errors import DataError
from ganops.metrics.fid import FeatureStats, frechet_distance
from ganops.metrics.pixel import pixel_fd_scorer, pooled_pixels
from ganops.models.generator import build_generator
from ganops.models.seeded_samples import generate_batches, sample_images, seeded_latents

L, K = 8, 10


def _g(conditional: bool = True) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = ModelConfig(latent_dim=L, g_width=8, d_width=8, conditional=conditional, spectral_norm=False, d_hidden=0)
    config = {"model": {"latent_dim": L, "latent_dist": "normal", "conditional": conditional},
              "image_size": 28, "channels": 1, "num_classes": K}
    return build_generator(model, 28, 1, K), config


@pytest.mark.parametrize("stop", ["close", "raise"])
def test_generate_puts_g_back_in_its_mode_however_the_loop_ends(stop: str) -> None:
    G, _ = _g()
    G.train()
    z, y = seeded_latents(10, L, "normal", K, True, seed=0)
    batches = generate_batches(G, z, y, batch_size=4)
    first = next(batches)
    assert first.shape == (4, 1, 28, 28) and not G.training  # BatchNorm uses its running statistics
    if stop == "close":
        batches.close()  # a consumer that takes only the first batch
    else:
        with pytest.raises(RuntimeError, match="boom"):
            batches.throw(RuntimeError("boom"))
    assert G.training


def test_sampler_and_pixel_scorer_see_the_same_samples() -> None:
    """The pixel scorer's figure equals the one computed from the shipped sampler's images for the same seed
    (before rounding to uint8: the scorer sees G's float output)."""
    G, config = _g()
    ref = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    score = pixel_fd_scorer(ref, 64, L, "normal", K, True, seed=5)(G)
    z, y = seeded_latents(64, L, "normal", K, True, seed=5)
    with torch.inference_mode():
        G.eval()
        x = G(z, y)
    stats = [FeatureStats.from_features(pooled_pixels(t)) for t in (x, ref)]
    want = frechet_distance(*stats)
    assert score == pytest.approx(want, rel=1e-12)
    images, labels = sample_images(G, config, 64, seed=5, batch_size=20)
    assert torch.equal(labels, y)
    assert np.abs(images.float().numpy() / 127.5 - 1 - x.clamp(-1, 1).numpy()).max() <= 0.5 / 127.5 + 1e-6


def test_a_model_from_other_data_is_refused_naming_the_file_and_both_hashes(tmp_path) -> None:
    meta = {"content_hash": "aaa"}
    check_trained_on(tmp_path / "judge.pt", "aaa", meta, "judge")
    check_trained_on(tmp_path / "old.pt", None, meta, "judge")  # a file that predates recording the hash
    with pytest.raises(DataError) as e:
        check_trained_on(tmp_path / "judge.pt", "bbb", meta, "judge")
    assert str(e.value) == (f"{tmp_path / 'judge.pt'}: trained on data bbb, the prepared data is aaa; "
                            "rerun `dvc repro judge`")
