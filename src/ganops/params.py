"""Reading params files into the config dataclasses: one line naming the file and key on any problem.

    cfg = load_section("params.yaml", "train", TrainConfig, choices={"loss": GAN_LOSSES})
"""

from __future__ import annotations

import dataclasses
import math
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ganops.config import SECTIONS, _check, _show, check_seed
from ganops.errors import ConfigError
from ganops.yamlfile import parse_yaml

T = TypeVar("T")
Choices = Mapping[str, Sequence[str]]


def read_params(path: str | Path) -> dict[str, Any]:
    """The whole params file (or a profile) as a dict; ConfigError when missing, not UTF-8 or not YAML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    raw = parse_yaml(text, str(p))
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at top level")
    return raw


def check_params(raw: dict[str, Any], where: str) -> None:
    """File-level rules: only known sections (a typo like `trian:` would silently run defaults) and a valid seed."""
    unknown = [k for k in raw if k != "seed" and k not in SECTIONS]
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r}; known: seed, {', '.join(SECTIONS)}")
    if "seed" in raw:
        try:
            check_seed(raw["seed"])
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


def _coerce(value: Any, f: dataclasses.Field[Any], key: str) -> Any:
    """YAML gives ints for floats (1 vs 1.0) and strings for everything else."""
    t = str(f.type)
    if value is None:
        if "None" in t:
            return None
        raise ValueError(f"{key}: must not be null")
    if t.startswith("bool"):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: must be true or false, got {_show(value)}")
        return value
    if t.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: must be an integer, got {_show(value)}")
        return value
    if t.startswith("float"):
        # an int past 1e308 cannot become a float at all (OverflowError): as non-finite as inf
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or abs(value) > sys.float_info.max or not math.isfinite(value)):
            raise ValueError(f"{key}: must be a finite number, got {_show(value)}")
        return float(value)
    if t.startswith("str"):
        if not isinstance(value, str):
            raise ValueError(f"{key}: must be a string, got {_show(value)}")
        _check(not any(unicodedata.category(c) == "Cc" for c in value), key,
               f"must not hold control characters, got {_show(value)}")
        return value
    if t.startswith("tuple"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: must be a list of strings, got {_show(value)}")
        return tuple(value)
    return value


def from_dict(cls: type[T], values: dict[str, Any], where: str, choices: Choices | None = None) -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys, bad types and values outside `choices`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    try:
        kwargs = {k: _coerce(v, fields[k], k) for k, v in values.items()}
        obj = cls(**kwargs)
        for key, allowed in (choices or {}).items():
            _check_choice(getattr(obj, key), allowed, key)
        return obj
    except ValueError as e:
        raise ConfigError(f"{where}.{e}") from None


def _check_choice(value: Any, allowed: Sequence[str], key: str) -> None:
    """value (a string, or a tuple of them) within `allowed`, else a ValueError naming key and the choices."""
    bad = [v for v in (value if isinstance(value, tuple) else (value,)) if v not in allowed]
    if bad:
        raise ValueError(f"{key}: must be {'one' if not isinstance(value, tuple) else 'a list'} of "
                         f"{', '.join(allowed)}, got {_show(bad[0])}")


def section_of(raw: dict[str, Any], section: str, cls: type[T], where: str, choices: Choices | None = None) -> T:
    """Section `section` of a parsed params dict (plus the top-level `seed`) as dataclass `cls`."""
    values = raw.get(section)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: section {section!r} must be a mapping")
    values = dict(values)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if "seed" in names and "seed" not in values and "seed" in raw:
        values["seed"] = raw["seed"]
    return from_dict(cls, values, f"{where}: {section}", choices)


def load_section(path: str | Path, section: str, cls: type[T], choices: Choices | None = None) -> T:
    """Load one params section (plus the top-level `seed`) into dataclass `cls`.

    `choices` maps a key to the names it may take, for vocabularies that live with their implementation
    (`{"loss": losses.GAN_LOSSES}`): the stage that uses them passes them, so config imports none of it.
    """
    raw = read_params(path)
    check_params(raw, str(path))
    return section_of(raw, section, cls, str(path), choices)
