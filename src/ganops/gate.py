"""The promotion gate: does a candidate generator replace the champion? Pure: numbers in, a decision out.

A candidate passes (`should_promote`) when
  0. no class is mode-collapsed: the judge's weakest class share (`judge/min_share_ratio`, share × K) is
     at least `promote.min_class_share` (a generator that drops a class can still score a fair FID);
     a version evaluated without a judge has no such metric and skips this rule; and
  1. its FID (at the evaluate protocol, e.g. `fid10k`) is at most `promote.max_fid`, and, if a champion exists,
  2. both were measured with the same protocol and reference data (else the numbers are not comparable), and
  3. its FID is lower than the champion's by more than `promote.min_improvement`, and
  4. its KID is lower by more than `promote.kid_sigmas` × sqrt(std_cand² + std_champ²): KID's subset std
     is the run-to-run noise scale, so two generators of equal quality do not swap the champion back
     and forth on measurement noise (FID alone has no error bar).

Before any rule, every figure the gate reads, of the candidate and of the champion, must be a finite
number in its valid range (see `gate_figures`); else the decision is a GanopsError, never a promotion:
a NaN compares false with everything, so it would silently skip the rule it feeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ganops.config import PromoteConfig
from ganops.errors import GanopsError
from ganops.metrics.names import MetricName

MIN_SHARE = "judge/min_share_ratio"  # the judge's weakest class share × K, as `ganops evaluate` logs and registers it
# KID is an unbiased estimate: a generator as good as the data scores around 0, a little below as often
# as above. Its mean over the subsets scatters by about std / sqrt(subsets) (std: the subsets' spread), so
# an honest KID is never below -KID_NEG_SIGMAS × std; one further down is a broken or forged record.
KID_NEG_SIGMAS = 3.0


def is_fid_key(key: str) -> bool:
    """True for a protocol FID key (fid10k, fid2500), false for derived ones (floor/fid10k, fid10k_over_floor)."""
    return (name := MetricName.of(key)) is not None and name.kind == "fid"


def _is_kid_key(key: str) -> bool:
    """kid<N> or its spread kid<N>_std."""
    return (name := MetricName.of(key.removesuffix("_std"))) is not None and name.kind == "kid"


def fid_key(metrics: Iterable[str]) -> str | None:
    """The FID key among `metrics` (the first in sorted order if several), or None."""
    return next((k for k in sorted(metrics) if is_fid_key(k)), None)


def kid_key(fid_name: str) -> str:
    """The KID key measured with the same N as `fid_name`: fid10k -> kid10k (its spread: kid10k_std)."""
    return str(MetricName.parse(fid_name).with_kind("kid"))


def gate_inputs(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics the gate reads, of an evaluation's: fid<N>, kid<N> and kid<N>_std, judge/min_share_ratio.
    A registered version carries just these as tags; the rest lives on its run and logged model."""
    return {k: v for k, v in metrics.items() if is_fid_key(k) or _is_kid_key(k) or k == MIN_SHARE}


@dataclass(frozen=True)
class VersionRecord:
    """What the gate reads of a registered version, the candidate's or the champion's: its metrics (numbers,
    or the registry's tag strings, which the gate parses and checks) and the data hash of its reference."""

    version: str
    metrics: Mapping[str, float | str]
    data_hash: str | None = None

    @property
    def fid_name(self) -> str:
        names = sorted(k for k in self.metrics if is_fid_key(k))
        if len(names) != 1:
            raise GanopsError(f"version {self.version}: expected one FID metric (fid<N>), found "
                              f"{names or 'none'}; was it registered by `ganops evaluate`?")
        return names[0]


@dataclass(frozen=True)
class GateFigures:
    """A version's figures the gate reads, each checked (see `gate_figures`)."""

    fid_name: str
    fid: float
    kid: tuple[float, float] | None  # (kid, kid_std), None when evaluated without KID
    min_share: float | None  # None when evaluated without a judge


def _number(c: VersionRecord, role: str, key: str, low: float, low_text: str) -> float:
    raw = c.metrics[key]
    try:
        x = float(raw)
    except (TypeError, ValueError):
        raise GanopsError(f"{role} v{c.version}: metric {key} is {raw!r:.60}, not a number; the gate cannot "
                          "judge on it (re-evaluate the version or fix its registry record)") from None
    if not (math.isfinite(x) and x >= low):
        raise GanopsError(f"{role} v{c.version}: metric {key} is {x:g}, not a finite number >= {low_text}; "
                          "the gate cannot judge on it (re-evaluate the version or fix its registry record)")
    return x


def gate_figures(c: VersionRecord, role: str = "version") -> GateFigures:
    """The figures of `c` the gate reads, each finite and in its valid range, else GanopsError naming
    `role` (candidate/champion), the version and the metric. The one definition of those ranges:
      fid >= 0 (a squared distance), kid_std >= 0 (a spread), min_share_ratio >= 0 (a share × K),
      kid >= -KID_NEG_SIGMAS × kid_std (an unbiased estimate: slightly negative is noise);
    and KID comes with its std or not at all."""
    name = c.fid_name
    fid = _number(c, role, name, 0.0, "0")
    kid_name = kid_key(name)
    has = (kid_name in c.metrics, f"{kid_name}_std" in c.metrics)
    kid = None
    if any(has):
        if not all(has):
            raise GanopsError(f"{role} v{c.version}: metric {kid_name if has[0] else kid_name + '_std'} without "
                              f"{kid_name + '_std' if has[0] else kid_name}; KID needs both")
        std = _number(c, role, f"{kid_name}_std", 0.0, "0")
        kid = _number(c, role, kid_name, -KID_NEG_SIGMAS * std, f"-{KID_NEG_SIGMAS:g} × {kid_name}_std "
                                                                f"({-KID_NEG_SIGMAS * std:g})"), std
    share = _number(c, role, MIN_SHARE, 0.0, "0") if MIN_SHARE in c.metrics else None
    return GateFigures(name, fid, kid, share)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def should_promote(cand: VersionRecord, champion: VersionRecord | None, cfg: PromoteConfig) -> Decision:
    """Apply the gate (see the module docstring); GanopsError if a figure it reads, of the candidate
    or the champion, is missing, not a number or out of range."""
    c = gate_figures(cand, "candidate")
    champ = gate_figures(champion, "champion") if champion is not None else None
    name, fid = c.fid_name, c.fid
    figures: dict[str, Any] = {"metric": name, "candidate_version": cand.version, "candidate_fid": fid,
                               "max_fid": cfg.max_fid}
    if c.min_share is not None:
        figures |= {"min_share_ratio": c.min_share, "min_class_share": cfg.min_class_share}
        if c.min_share < cfg.min_class_share:
            return Decision(False, f"mode collapse: the weakest class has {c.min_share:.3f} of its expected "
                                   f"share < min_class_share {cfg.min_class_share:g}", figures)
    if fid > cfg.max_fid:
        return Decision(False, f"{name} {fid:.3f} > max_fid {cfg.max_fid:g}", figures)
    if champion is None or champ is None:
        return Decision(True, f"{name} {fid:.3f} <= max_fid {cfg.max_fid:g}; no champion yet", figures)
    figures |= {"champion_version": champion.version, "champion_fid": champ.fid}
    if champ.fid_name != name or (champion.data_hash and cand.data_hash and champion.data_hash != cand.data_hash):
        return Decision(False, f"not comparable with champion v{champion.version} ({champ.fid_name} on data "
                               f"{champion.data_hash}) vs {name} on data {cand.data_hash}; evaluate both the "
                               "same way or move the alias by hand", figures)
    gain = champ.fid - fid
    figures |= {"fid_gain": gain, "min_improvement": cfg.min_improvement}
    if gain <= cfg.min_improvement:
        return Decision(False, f"{name} {fid:.3f} does not beat champion v{champion.version} "
                               f"({champ.fid:.3f}) by more than {cfg.min_improvement:g}", figures)
    if c.kid is not None and champ.kid is not None:
        noise = cfg.kid_sigmas * math.hypot(c.kid[1], champ.kid[1])
        kid_gain = champ.kid[0] - c.kid[0]
        figures |= {"candidate_kid": c.kid[0], "champion_kid": champ.kid[0], "kid_gain": kid_gain,
                    "kid_noise": noise}
        if kid_gain <= noise:
            return Decision(False, f"FID gain {gain:.3f} but KID gain {kid_gain:.5f} is within noise "
                                   f"({cfg.kid_sigmas:g} σ = {noise:.5f})", figures)
    return Decision(True, f"{name} {fid:.3f} beats champion v{champion.version} "
                          f"({champ.fid:.3f}) by {gain:.3f}", figures)
