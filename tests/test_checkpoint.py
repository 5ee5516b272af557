"""What a checkpoint's digest guarantees, with and without a signing key, on real files.

Without a key the sha256 digest catches accidents (truncation, a flipped bit) but not someone who
rewrites the file and recomputes it; with GANOPS_CHECKPOINT_KEY the HMAC catches that too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ganops.checkpoint import KEY_ENV, CheckpointError, digest, key_from_env, load_checkpoint, save_checkpoint
from ganops.config import ModelConfig, TrainConfig
from ganops.models.generator import build_generator
from ganops.training.common import NullSink
from ganops.training.gan import train_gan
from pipelines.cli import app

from .gan_worker import tiny_data

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TINY = ModelConfig(latent_dim=8, g_width=4, d_width=4, conditional=False, spectral_norm=False, d_hidden=0)
runner = CliRunner()


def write(path: Path, key: bytes | None = None) -> Path:
    """A small generator checkpoint (kind "generator"), as the train stage writes one."""
    G = build_generator(TINY, 28, 1, 10)
    config = {"model": dataclasses.asdict(TINY), "image_size": 28, "channels": 1, "num_classes": 10}
    return save_checkpoint(path, "generator", {"model": G.state_dict()}, config, key=key)


def forge(path: Path, drop_signature: bool = False) -> float:
    """Rewrite one weight and recompute the plain digest, as anyone with write access can;
    returns the forged value."""
    payload = torch.load(path, weights_only=True)
    w = next(iter(payload["state"]["model"].values()))
    w.view(-1)[0] = 1234.5
    payload["digest"] = digest({k: payload[k] for k in ("kind", "config", "state")})
    if drop_signature:
        payload.pop("hmac", None)
    torch.save(payload, path)
    return 1234.5


def first_weight(state: dict) -> float:
    return float(next(iter(state["model"].values())).view(-1)[0])


def test_unkeyed_digest_refuses_truncation_and_bit_flips_but_not_a_recomputed_digest(tmp_path: Path) -> None:
    path = write(tmp_path / "g.pt")
    state, _ = load_checkpoint(path)
    weight = next(iter(state["model"].values()))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="unreadable checkpoint, truncated"):
        load_checkpoint(path)

    flipped = bytearray(whole)
    at = flipped.find(weight.numpy().tobytes()[:64])  # inside the first weight's raw bytes
    assert at > 0
    flipped[at + 10] ^= 0x04
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="does not match its digest"):
        load_checkpoint(path)

    # The limit: the digest is unkeyed, so a rewritten file with a recomputed digest loads.
    path.write_bytes(whole)
    value = forge(path)
    state, _ = load_checkpoint(path, kind="generator")
    assert first_weight(state) == value


def test_keyed_load_refuses_a_forged_unsigned_or_foreign_checkpoint_and_loads_a_signed_one(tmp_path: Path) -> None:
    signed = write(tmp_path / "signed.pt", key=KEY)
    state, config = load_checkpoint(signed, kind="generator", key=KEY)
    assert config["num_classes"] == 10 and first_weight(state) != 1234.5

    with pytest.raises(CheckpointError, match="signature does not match the key"):
        load_checkpoint(signed, key=OTHER_KEY)

    forged = write(tmp_path / "forged.pt", key=KEY)
    forge(forged)  # plain digest recomputed, old signature kept
    with pytest.raises(CheckpointError, match="signature does not match the key"):
        load_checkpoint(forged, key=KEY)

    stripped = write(tmp_path / "stripped.pt", key=KEY)
    forge(stripped, drop_signature=True)  # or the signature removed altogether
    with pytest.raises(CheckpointError, match="not signed and a signing key is set"):
        load_checkpoint(stripped, key=KEY)

    unsigned = write(tmp_path / "unsigned.pt")
    with pytest.raises(CheckpointError, match=f"not signed.*{KEY_ENV}"):
        load_checkpoint(unsigned, key=KEY)


def test_signed_checkpoint_loads_without_a_key_on_its_plain_digest_only(tmp_path: Path) -> None:
    path = write(tmp_path / "g.pt", key=KEY)
    load_checkpoint(path, kind="generator")
    value = forge(path)  # without the key nobody checks the signature: the forged file loads
    state, _ = load_checkpoint(path, kind="generator")
    assert first_weight(state) == value


def test_key_from_env_is_none_when_unset_and_refuses_an_empty_or_short_key() -> None:
    assert key_from_env({}) is None
    assert key_from_env({KEY_ENV: "x" * 16}) == b"x" * 16
    for bad in ("", "short"):
        with pytest.raises(CheckpointError, match=f"^{KEY_ENV}: {len(bad)} bytes, a signing key needs at least 16"):
            key_from_env({KEY_ENV: bad})


def test_sample_command_verifies_the_signature_when_the_key_is_set(tmp_path: Path) -> None:
    unsigned, signed = write(tmp_path / "unsigned.pt"), write(tmp_path / "signed.pt", key=KEY)
    out = tmp_path / "grid.png"
    env = {KEY_ENV: KEY.decode()}
    res = runner.invoke(app, ["sample", "--model", str(unsigned), "--out", str(out), "-n", "4"], env=env)
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [f"error: {unsigned}: checkpoint is not signed and a signing key is "
                                               f"set ({KEY_ENV}); write it again with the key, or unset the key "
                                               "to accept unsigned files"]
    assert not out.exists()
    res = runner.invoke(app, ["sample", "--model", str(unsigned), "--out", str(out), "-n", "4"],
                        env={KEY_ENV: "short"})
    assert res.exit_code == 2 and f"error: {KEY_ENV}: 5 bytes" in res.output and not out.exists()
    res = runner.invoke(app, ["sample", "--model", str(signed), "--out", str(out), "-n", "4"], env=env)
    assert res.exit_code == 0, res.output
    assert out.is_file()


def test_training_signs_its_checkpoints_and_resume_requires_the_same_key(tmp_path: Path) -> None:
    x, y = tiny_data(64)
    cfg = TrainConfig(epochs=1, batch_size=16, log_every=2, ema_decay=0.9, seed=1, num_threads=1, loss="bce",
                      init_from_autoencoder=False)
    n = torch.get_num_threads()
    try:
        train_gan(cfg, TINY, x, y, 10, tmp_path, NullSink(), log=lambda s: None, key=KEY)
        load_checkpoint(tmp_path / "last.pt", kind="gan", key=KEY)
        resumed = dataclasses.replace(cfg, epochs=2)
        with pytest.raises(CheckpointError, match="signature does not match the key"):
            train_gan(resumed, TINY, x, y, 10, tmp_path, NullSink(), log=lambda s: None, resume=True,
                      key=OTHER_KEY)
        train_gan(resumed, TINY, x, y, 10, tmp_path, NullSink(), log=lambda s: None, resume=True, key=KEY)
        state, _ = load_checkpoint(tmp_path / "last.pt", kind="gan", key=KEY)
        assert state["epochs_done"] == 2
    finally:
        torch.set_num_threads(n)  # train_gan applies cfg.num_threads process-wide
