"""Params profiles: a YAML file of overrides (and `key=value` sets) merged into params.yaml, validated.

    apply_profile("params.yaml", "profiles/gpu.yaml", sets=["train.epochs=40"])

Every section the result touches is loaded through its config dataclass first, so a typo in a profile
is refused with the same one-line error a bad params.yaml gets, and params.yaml is left as it was.
Meant for CI checkouts and GPU runners: the rewritten params.yaml keeps its values but not its comments
(for experiments on a workstation, `dvc exp run -S section.key=value` keeps the file as it is).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ganops import config as C
from ganops.io import write_atomic

SECTIONS: dict[str, type] = {
    "data": C.DataConfig, "model": C.ModelConfig, "pretrain": C.PretrainConfig, "train": C.TrainConfig,
    "judge": C.JudgeConfig, "evaluate": C.EvaluateConfig, "promote": C.PromoteConfig, "tracking": C.TrackingConfig,
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_set(item: str) -> dict[str, Any]:
    """"train.epochs=40" → {"train": {"epochs": 40}} (the value parsed as YAML, like `dvc exp run -S`)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise C.ConfigError(f"--set {item!r}: expected section.key=value")
    node: Any = yaml.safe_load(value) if value.strip() else ""
    for part in reversed(key.strip().split(".")):
        node = {part: node}
    return node


def apply_profile(params: str | Path, profile: str | Path | None = None, sets: list[str] | None = None) -> list[str]:
    """Merge `profile` (a YAML mapping of sections) and then `sets` into `params`; returns the changed keys."""
    params = Path(params)
    base = C.read_params(params)
    over: dict[str, Any] = {}
    if profile is not None:
        over = C.read_params(profile)
    for item in sets or []:
        over = _merge(over, _parse_set(item))
    merged = _merge(base, over)
    for name in over:
        if name == "seed":
            continue
        if name not in SECTIONS:
            raise C.ConfigError(f"{profile or '--set'}: unknown section {name!r}; known: seed, {', '.join(SECTIONS)}")
        section = dict(merged[name] or {})
        if "seed" in {f.name for f in dataclasses.fields(SECTIONS[name])} and "seed" not in section:
            section["seed"] = merged.get("seed", 0)
        C.from_dict(SECTIONS[name], section, f"{profile or '--set'}: {name}")  # validate before writing
    changed = [f"{s}.{k}" if isinstance(v, dict) else s for s, v in over.items()
               for k in (v if isinstance(v, dict) else [None])]
    write_atomic(params, yaml.safe_dump(merged, sort_keys=False).encode())
    return changed
