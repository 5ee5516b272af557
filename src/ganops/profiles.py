"""Params profiles: a YAML file of overrides (and `key=value` sets) merged into params.yaml, validated.

    apply_profile("params.yaml", "profiles/gpu.yaml", sets=["train.epochs=40"])

Every section of the result is loaded through its config dataclass first, so a typo in a profile or a
`--set` is refused with the same one-line error a bad params.yaml gets, and params.yaml is left as it was.
Meant for CI checkouts and GPU runners: the rewritten params.yaml keeps its values but not its comments
(for experiments on a workstation, `dvc exp run -S section.key=value` keeps the file as it is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ganops import config as C
from ganops import params as P
from ganops.io import write_atomic
from ganops.yamlfile import parse_yaml

SECTIONS = C.SECTIONS  # the sections a profile may touch: exactly those params.yaml has


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_set(item: str) -> dict[str, Any]:
    """"train.epochs=40" → {"train": {"epochs": 40}} (the value parsed as YAML, like `dvc exp run -S`)."""
    key, sep, value = item.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise C.ConfigError(f"--set {item!r}: expected section.key=value")
    node: Any = parse_yaml(value, f"--set {item!r}") if value.strip() else ""
    for part in reversed(parts):
        node = {part: node}
    return node


def apply_profile(params: str | Path, profile: str | Path | None = None, sets: list[str] | None = None) -> list[str]:
    """Merge `profile` (a YAML mapping of sections) and then `sets` into `params`; returns the changed keys.

    The merged result is checked with the loaders every stage uses (all its sections, not only the touched
    ones) before params.yaml is rewritten; a refusal names the layer that last set the section.
    """
    params = Path(params)
    base = P.read_params(params)
    prof = P.read_params(profile) if profile is not None else {}
    set_over: dict[str, Any] = {}
    for item in sets or []:
        set_over = _merge(set_over, _parse_set(item))
    over = _merge(prof, set_over)
    merged = _merge(base, over)

    def layer(name: str) -> str:
        return "--set" if name in set_over else str(profile) if name in prof else str(params)

    for name in merged:
        P.check_params({name: merged[name]}, layer(name))
    for name, cls in SECTIONS.items():
        if name in merged:
            P.section_of(merged, name, cls, layer(name), _choices().get(name))
    changed = [f"{s}.{k}" if isinstance(v, dict) else s for s, v in over.items()
               for k in (v if isinstance(v, dict) else [None])]
    if merged != base:  # a no-op keeps the file as it is, comments and all
        write_atomic(params, yaml.safe_dump(merged, sort_keys=False).encode())
    return changed


def _choices() -> dict[str, dict[str, tuple[str, ...]]]:
    """The vocabularies that live with their implementation, by section: what `ganops train` and the metric
    stages check on load, checked here too so a profile with a typo fails when applied, not mid-pipeline."""
    from ganops.data.sources import SOURCES
    from ganops.losses import GAN_LOSSES
    from ganops.metrics.names import metric_kinds

    return {"data": {"source": SOURCES}, "train": {"loss": GAN_LOSSES}, "evaluate": {"metrics": metric_kinds()}}
