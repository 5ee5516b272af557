"""FLOP counting of the step ganops takes (training/flops.py), checked against hand counts and
against the step's parts counted one by one. FLOP counts depend on shapes only: exact on any CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ganops.config import ModelConfig, TrainConfig
from ganops.runtime import autocast_dtype
from ganops.training.distributed import DistInfo
from ganops.training.flops import count_flops, step_flops
from ganops.training.game import Game

from .gan_worker import tiny_data

B = 8
# params.yaml's recipe without its D hidden layer
TINY = ModelConfig(latent_dim=8, g_width=4, d_width=4, conditional=True, spectral_norm=True, d_hidden=0)


def test_linear_forward_and_backward_count_two_m_n_k_per_product() -> None:
    m, k, n = 16, 32, 24
    layer = torch.nn.Linear(k, n)
    x = torch.randn(m, k, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * m * n * k
    # backward: grad of the input (m×n by n×k) and of the weight (n×m by m×k), one product each
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * m * n * k
    x.requires_grad_(False)
    assert count_flops(lambda: layer(x).sum().backward()) == 2 * 2 * m * n * k  # no input grad wanted


def game_for(model_cfg: ModelConfig, precision: str) -> Game:
    """A Game built as train_gan builds it, on tiny data."""
    cfg = TrainConfig(batch_size=B, ema_decay=0.9, seed=1, precision=precision, epochs=5, loss="bce",
                      init_from_autoencoder=False)
    x, y = tiny_data(4 * B)
    device = torch.device("cpu")
    game = Game(cfg, model_cfg, x, y, 10, device, autocast_dtype(device, precision), DistInfo())
    game.wrap_ddp(DistInfo())
    return game


def parts(game: Game, d_batch_in_g_step: int) -> int:
    """The step's parts counted one by one: G makes B fakes without grad, D learns on 2B images,
    then G learns through a frozen D that sees `d_batch_in_g_step` images (only the B fakes' half
    carries G's gradient, but D's layers run on every image)."""
    G, D = game.G, game.D
    z, y = torch.randn(B, TINY.latent_dim), torch.arange(B) % 10
    x2 = torch.randn(2 * B, 1, 28, 28)
    y2 = torch.cat([y, y])
    G.requires_grad_(False)
    D.requires_grad_(True)
    with torch.no_grad():
        g_nograd = count_flops(lambda: G(z, y))
    d_step = count_flops(lambda: D(x2, y2).sum().backward())
    D.requires_grad_(False)
    G.requires_grad_(True)
    if d_batch_in_g_step == B:
        g_step = count_flops(lambda: D(G(z, y), y).sum().backward())
    else:
        g_step = count_flops(lambda: D(torch.cat([x2[:B], G(z, y)]), y2)[B:].sum().backward())
    return g_nograd + d_step + g_step


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_flops_count_g_through_a_spectral_norm_d_on_b_images_not_2b(precision: str) -> None:
    game = game_for(TINY, precision)
    assert not game.d_batchnorm
    counted = step_flops(game, [torch.arange(B)])
    assert counted == parts(game, d_batch_in_g_step=B)
    assert counted < parts(game, d_batch_in_g_step=2 * B)  # what bench_train used to count


def test_step_flops_count_g_through_a_batchnorm_d_on_2b_images() -> None:
    game = game_for(dataclasses.replace(TINY, spectral_norm=False), "fp32")
    assert game.d_batchnorm
    assert step_flops(game, [torch.arange(B)]) == parts(game, d_batch_in_g_step=2 * B)
