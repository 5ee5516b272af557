"""Typed, validated configuration: one frozen dataclass per params.yaml section.

The pipelines load a section with `load_section(path, "data", DataConfig)`; the
core only ever sees the dataclass. A bad value raises `ConfigError` with the file
and the dotted key, which the command layer prints as one line (exit 2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ganops.errors import GanopsError


class ConfigError(GanopsError, ValueError):
    """A params file or value is unusable; the message names file and key."""


T = TypeVar("T")

SOURCES = ("fashion-mnist", "mnist", "cifar10", "folder")
IMAGE_SIZES = (28, 32, 64)


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{key}: {msg}")


@dataclass(frozen=True)
class DataConfig:
    """`data:` — where images come from and how they are checked."""

    source: str = "fashion-mnist"
    path: str = "/usr/share/datasets/fashion-mnist"
    download: bool = False  # torchvision download into the raw dir (needs a network)
    limit: int | None = None  # cap on training images, None = all
    image_size: int = 28  # folder source: images are resized to this (square)
    channels: int = 1  # folder source: 1 = grayscale, 3 = RGB
    resize: bool = True  # folder source: False = all images must already match
    test_fraction: float = 0.1  # folder source: share of images held out as test
    class_balance_tolerance: float = 0.5  # every class share within ±50 % of 1/K
    dedupe: bool = True  # drop train images whose pixels also occur in test
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.source in SOURCES, "source", f"must be one of {', '.join(SOURCES)}, got {self.source!r}")
        _check(bool(self.path), "path", "must not be empty")
        _check(self.limit is None or self.limit > 0, "limit", f"must be null or > 0, got {self.limit}")
        _check(self.image_size in IMAGE_SIZES, "image_size", f"must be one of {IMAGE_SIZES}, got {self.image_size}")
        _check(self.channels in (1, 3), "channels", f"must be 1 or 3, got {self.channels}")
        _check(0 < self.test_fraction < 1, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        _check(0 <= self.class_balance_tolerance <= 1, "class_balance_tolerance",
               f"must be in [0, 1], got {self.class_balance_tolerance}")


LATENT_DISTS = ("normal", "uniform")


@dataclass(frozen=True)
class ModelConfig:
    """`model:` — architecture shared by pretrain (autoencoder) and train (GAN).

    One section for both so the autoencoder's weights load into G and D by name.
    Image size and channels are not here: they come from the prepared data's meta.json.
    """

    latent_dim: int = 64
    g_width: int = 64  # base channel count of the generator / decoder
    d_width: int = 64  # base channel count of the discriminator / encoder trunk
    latent_dist: str = "normal"  # normal | uniform (in [-1, 1])
    conditional: bool = False  # labels go to G (embedding joined to z) and D (projection)
    spectral_norm: bool = False  # spectral norm on D's layers

    def __post_init__(self) -> None:
        _check(1 <= self.latent_dim <= 4096, "latent_dim", f"must be in 1..4096, got {self.latent_dim}")
        _check(4 <= self.g_width <= 1024, "g_width", f"must be in 4..1024, got {self.g_width}")
        _check(4 <= self.d_width <= 1024, "d_width", f"must be in 4..1024, got {self.d_width}")
        _check(self.latent_dist in LATENT_DISTS, "latent_dist",
               f"must be one of {', '.join(LATENT_DISTS)}, got {self.latent_dist!r}")


@dataclass(frozen=True)
class TrackingConfig:
    """`tracking:` — shared by every stage that logs to MLflow."""

    experiment: str = "ganops"
    system_metrics: bool = True

    def __post_init__(self) -> None:
        _check(bool(self.experiment.strip()), "experiment", "must not be empty")


def read_params(path: str | Path) -> dict[str, Any]:
    """The whole params file as a dict; ConfigError when missing or not YAML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at top level")
    return raw


def _coerce(value: Any, f: dataclasses.Field[Any], key: str) -> Any:
    """YAML gives ints for floats (1 vs 1.0) and strings for everything else."""
    t = str(f.type)
    if value is None:
        if "None" in t:
            return None
        raise ValueError(f"{key}: must not be null")
    if t.startswith("bool"):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: must be true or false, got {value!r}")
        return value
    if t.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: must be an integer, got {value!r}")
        return value
    if t.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if t.startswith("str"):
        if not isinstance(value, str):
            raise ValueError(f"{key}: must be a string, got {value!r}")
        return value
    if t.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: must be a list, got {value!r}")
        return tuple(value)
    return value


def from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys and bad types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    try:
        kwargs = {k: _coerce(v, fields[k], k) for k, v in values.items()}
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{where}.{e}") from None


def load_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Load one params section (plus the top-level `seed`) into dataclass `cls`."""
    raw = read_params(path)
    values = raw.get(section)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: section {section!r} must be a mapping")
    values = dict(values)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if "seed" in names and "seed" not in values and "seed" in raw:
        values["seed"] = raw["seed"]
    return from_dict(cls, values, f"{path}: {section}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A flat dict of a config dataclass (for logging and checkpoint JSON)."""
    return dataclasses.asdict(cfg)


__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "TrackingConfig", "load_section", "read_params",
    "from_dict", "to_dict", "field",
]
