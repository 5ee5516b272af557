"""The README's pictures are the shipped model's: each carries the md5 of the generator it shows, and that must
be the `models/generator.pt` the committed dvc.lock records (docs/figures.py draws and stamps them)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ganops.config import ModelConfig
from ganops.io import file_digest
from ganops.models.generator import build_generator, save_generator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import figures  # noqa: E402


@pytest.mark.parametrize("name", figures.FIGURES)
def test_the_committed_pictures_show_the_generator_dvc_lock_records(name: str) -> None:
    stamped = figures.stamped_md5(ROOT / name)
    locked = figures.locked_md5(ROOT / "dvc.lock")
    assert stamped == locked, (f"{name} shows generator {stamped}, dvc.lock records {locked}: redraw with "
                               "`.venv/bin/python docs/figures.py` after the dvc repro that wrote dvc.lock")


def _checkout(root: Path, lock_md5: str | None = None) -> str:
    """A tiny repro output: a generator, its train curves and a dvc.lock recording it (or `lock_md5`)."""
    cfg = ModelConfig(latent_dim=8, g_width=4, d_width=4)
    G = build_generator(cfg, 28, 1, 10)
    (root / "models").mkdir(parents=True)
    config = {"model": dataclasses.asdict(cfg), "image_size": 28, "channels": 1, "num_classes": 10,
              "class_names": list("abcdefghij")}
    save_generator(root / "models/generator.pt", G, config)
    md5 = file_digest(root / "models/generator.pt", "md5")
    (root / "plots").mkdir()
    (root / "plots/train.csv").write_text("step,epoch,d_loss,g_loss,d_real,d_fake\n"
                                          "50,1,1.0,0.5,0.6,0.4\n100,1,0.9,0.6,0.6,0.4\n")
    (root / "plots/train_epochs.csv").write_text("epoch,step,score,best_score\n1,100,80.0,80.0\n")
    lock = {"schema": "2.0", "stages": {"train": {"outs": [{"path": "models/generator.pt", "hash": "md5",
                                                            "md5": lock_md5 or md5, "size": 1}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "docs").mkdir()
    return md5


def _draw(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "docs/figures.py"), "--root", str(root), "--out", str(root)],
                          capture_output=True, text=True, timeout=300)


def test_figures_stamps_each_picture_with_the_generator_it_draws(tmp_path: Path) -> None:
    md5 = _checkout(tmp_path)
    done = _draw(tmp_path)
    assert done.returncode == 0, done.stderr
    for name in figures.FIGURES:
        assert figures.stamped_md5(tmp_path / name) == md5
        with Image.open(tmp_path / name) as im:
            assert im.width > 100 and im.height > 100


def test_figures_refuses_a_generator_dvc_lock_does_not_record(tmp_path: Path) -> None:
    _checkout(tmp_path, lock_md5="0" * 32)
    done = _draw(tmp_path)
    assert done.returncode != 0
    assert "is not the 00000000000000000000000000000000 that dvc.lock records" in done.stderr
    assert not any((tmp_path / name).exists() for name in figures.FIGURES)


def test_a_picture_without_a_stamp_or_with_another_one_is_told_apart(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("L", (4, 4)).save(plain)
    assert figures.stamped_md5(plain) is None
    figures.save_png(tmp_path / "stamped.png", Image.new("L", (4, 4)), "a" * 32)
    assert figures.stamped_md5(tmp_path / "stamped.png") == "a" * 32
