"""Each artifact file (generator, autoencoder, judge) is written and read by one module: save -> load gives back the
same weights and config; a damaged or foreign file is refused in one line naming it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ganops.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ganops.config import ModelConfig
from ganops.errors import GanopsError
from ganops.metrics.judge import JudgeNet, load_judge, save_judge
from ganops.models.autoencoder import build_autoencoder, init_state, load_autoencoder, save_autoencoder
from ganops.models.generator import build_generator, load_generator, save_generator

CFG = ModelConfig(latent_dim=8, g_width=4, d_width=4)  # the default recipe's architecture, narrow
META = {"image_size": 28, "channels": 1, "num_classes": 10}


def _generator(path: Path) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    G = build_generator(CFG, 28, 1, 10)
    config = {"model": dataclasses.asdict(CFG), **META, "class_names": list("abcdefghij"), "data_hash": "h",
              "ema": True, "mlflow_run_id": "r"}
    save_generator(path, G, config)
    return G, config


def _autoencoder(path: Path) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    ae = build_autoencoder(CFG, 28, 1)
    config = {"model": dataclasses.asdict(CFG), "image_size": 28, "channels": 1, "variational": False,
              "data_hash": "h", "mlflow_run_id": "r", "train_flops": 1e9}
    save_autoencoder(path, ae, config)
    return ae, config


def _judge(path: Path) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    net = JudgeNet(1, 28, 10, width=4, feature_dim=8)
    config = {"class_names": list("abcdefghij"), "test_accuracy": 0.5, "data_hash": "h", "mlflow_run_id": "r"}
    save_judge(path, net, config)
    return net, config


def _same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_generator_file_round_trips_and_keeps_its_byte_layout(tmp_path: Path) -> None:
    G, config = _generator(tmp_path / "g.pt")
    loaded, loaded_config = load_generator(tmp_path / "g.pt")
    _same_weights(G.state_dict(), loaded.state_dict())
    assert loaded_config == config and not loaded.training
    # the layout every generator.pt so far has: kind "generator", {"model": state_dict}, the config as given
    save_checkpoint(tmp_path / "direct.pt", "generator", {"model": G.state_dict()}, config)
    assert (tmp_path / "g.pt").read_bytes() == (tmp_path / "direct.pt").read_bytes()
    with pytest.raises(ValueError, match="lacks num_classes"):
        save_generator(tmp_path / "bad.pt", G, {k: v for k, v in config.items() if k != "num_classes"})
    assert not (tmp_path / "bad.pt").exists()


def test_the_autoencoder_file_round_trips_and_keeps_its_byte_layout(tmp_path: Path) -> None:
    ae, config = _autoencoder(tmp_path / "ae.pt")
    state, loaded_config = load_autoencoder(tmp_path / "ae.pt")
    _same_weights(ae.state_dict(), state)
    assert loaded_config == config
    weights, flops = init_state(tmp_path / "ae.pt", CFG, META, key=None)
    _same_weights(ae.state_dict(), weights)
    assert flops == 1e9
    save_checkpoint(tmp_path / "direct.pt", "autoencoder", {"model": ae.state_dict()}, config)
    assert (tmp_path / "ae.pt").read_bytes() == (tmp_path / "direct.pt").read_bytes()


def test_the_judge_file_round_trips(tmp_path: Path) -> None:
    net, config = _judge(tmp_path / "j.pt")
    loaded = load_judge(tmp_path / "j.pt")
    _same_weights(net.state_dict(), loaded.state_dict())
    assert {k: loaded.meta[k] for k in config} == config and loaded.config == net.config


LOADERS = {"generator": (_generator, load_generator), "autoencoder": (_autoencoder, load_autoencoder),
           "judge": (_judge, load_judge)}
FOREIGN = {"generator": _judge, "autoencoder": _generator, "judge": _autoencoder}


@pytest.mark.parametrize("fmt", list(LOADERS))
def test_a_damaged_or_foreign_file_is_refused_in_one_line_naming_it(tmp_path: Path, fmt: str) -> None:
    save, load = LOADERS[fmt]
    save(tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    FOREIGN[fmt](tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    for name in ("cut.pt", "other.pt", "text.pt", "missing.pt"):
        with pytest.raises(CheckpointError) as e:
            load(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name)) and "\n" not in msg, msg


def test_a_generator_file_that_predates_a_model_field_loads_as_it_was_built(tmp_path: Path) -> None:
    """A file written before d_hidden/depth/g_cond_bn/g_upsample existed means the plain layers of its time,
    whatever today's defaults (the recipe) say."""
    old = ModelConfig(latent_dim=8, g_width=4, d_width=4, conditional=False, spectral_norm=False, d_hidden=0)
    torch.manual_seed(0)
    G = build_generator(old, 28, 1, 10)
    first = {k: v for k, v in dataclasses.asdict(old).items()
             if k in ("latent_dim", "g_width", "d_width", "latent_dist", "conditional", "spectral_norm")}
    save_checkpoint(tmp_path / "old.pt", "generator", {"model": G.state_dict()}, {"model": first, **META})
    loaded, config = load_generator(tmp_path / "old.pt")
    _same_weights(G.state_dict(), loaded.state_dict())
    assert config["model"] == first
    # a file without a field every checkpoint has is refused, not completed from today's defaults
    save_checkpoint(tmp_path / "broken.pt", "generator", {"model": G.state_dict()},
                    {"model": {k: v for k, v in first.items() if k != "conditional"}, **META})
    with pytest.raises(CheckpointError, match="broken.pt: .*lacks conditional"):
        load_generator(tmp_path / "broken.pt")


def test_an_autoencoder_for_another_architecture_is_refused_naming_the_key(tmp_path: Path) -> None:
    _autoencoder(tmp_path / "ae.pt")
    with pytest.raises(GanopsError, match="ae.pt: autoencoder has model.g_width=4, params say 8"):
        init_state(tmp_path / "ae.pt", dataclasses.replace(CFG, g_width=8), META, key=None)
    state, config = load_checkpoint(tmp_path / "ae.pt", kind="autoencoder")
    assert sorted(state) == ["model"] and config["train_flops"] == 1e9
