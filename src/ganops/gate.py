"""The promotion gate: does a candidate generator replace the champion? Pure: numbers in, a decision out.

A candidate passes when
  0. no class is mode-collapsed: the judge's weakest class share (`judge/min_share_ratio`, share × K) is
     at least `promote.min_class_share` (a generator that drops a class can still score a fair FID);
     a version evaluated without a judge has no such metric and skips this rule; and
  1. its FID (at the evaluate protocol, e.g. `fid10k`) is at most `promote.max_fid`, and, if a champion exists,
  2. both were measured with the same protocol and reference data (else the numbers are not comparable), and
  3. its FID is lower than the champion's by more than `promote.min_improvement`, and
  4. its KID is lower by more than `promote.kid_sigmas` × sqrt(std_cand² + std_champ²): KID's subset std
     is the run-to-run noise scale, so two generators of equal quality do not swap the champion back
     and forth on measurement noise (FID alone has no error bar).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ganops.config import PromoteConfig
from ganops.errors import GanopsError

_FID = re.compile(r"fid\d+k?")
MIN_SHARE = "judge/min_share_ratio"  # as `ganops evaluate` registers it


@dataclass(frozen=True)
class Candidate:
    """What the gate reads of a registered version: its metrics and the data hash of its reference."""

    version: str
    metrics: Mapping[str, float]
    data_hash: str | None = None

    @property
    def fid_name(self) -> str:
        names = sorted(k for k in self.metrics if _FID.fullmatch(k))
        if len(names) != 1:
            raise GanopsError(f"version {self.version}: expected one FID metric (fid<N>), found "
                              f"{names or 'none'}; was it registered by `ganops evaluate`?")
        return names[0]

    def kid(self) -> tuple[float, float] | None:
        name = "kid" + self.fid_name[3:]
        if name in self.metrics and f"{name}_std" in self.metrics:
            return float(self.metrics[name]), float(self.metrics[f"{name}_std"])
        return None


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def decide(cand: Candidate, champion: Candidate | None, cfg: PromoteConfig) -> Decision:
    """Apply the gate (see the module docstring); GanopsError if the candidate has no usable FID."""
    name = cand.fid_name
    fid = float(cand.metrics[name])
    if not math.isfinite(fid):
        raise GanopsError(f"version {cand.version}: {name} is {fid}, not a number the gate can use")
    figures: dict[str, Any] = {"metric": name, "candidate_version": cand.version, "candidate_fid": fid,
                               "max_fid": cfg.max_fid}
    share = cand.metrics.get(MIN_SHARE)
    if share is not None:
        figures |= {"min_share_ratio": float(share), "min_class_share": cfg.min_class_share}
        if not float(share) >= cfg.min_class_share:  # NaN fails too
            return Decision(False, f"mode collapse: the weakest class has {float(share):.3f} of its expected "
                                   f"share < min_class_share {cfg.min_class_share:g}", figures)
    if fid > cfg.max_fid:
        return Decision(False, f"{name} {fid:.3f} > max_fid {cfg.max_fid:g}", figures)
    if champion is None:
        return Decision(True, f"{name} {fid:.3f} <= max_fid {cfg.max_fid:g}; no champion yet", figures)
    champ_name = champion.fid_name
    figures |= {"champion_version": champion.version, "champion_fid": float(champion.metrics[champ_name])}
    if champ_name != name or (champion.data_hash and cand.data_hash and champion.data_hash != cand.data_hash):
        return Decision(False, f"not comparable with champion v{champion.version} ({champ_name} on data "
                               f"{champion.data_hash}) vs {name} on data {cand.data_hash}; evaluate both the "
                               "same way or move the alias by hand", figures)
    gain = figures["champion_fid"] - fid
    figures |= {"fid_gain": gain, "min_improvement": cfg.min_improvement}
    if gain <= cfg.min_improvement:
        return Decision(False, f"{name} {fid:.3f} does not beat champion v{champion.version} "
                               f"({figures['champion_fid']:.3f}) by more than {cfg.min_improvement:g}", figures)
    k_cand, k_champ = cand.kid(), champion.kid()
    if k_cand is not None and k_champ is not None:
        noise = cfg.kid_sigmas * math.hypot(k_cand[1], k_champ[1])
        kid_gain = k_champ[0] - k_cand[0]
        figures |= {"candidate_kid": k_cand[0], "champion_kid": k_champ[0], "kid_gain": kid_gain, "kid_noise": noise}
        if kid_gain <= noise:
            return Decision(False, f"FID gain {gain:.3f} but KID gain {kid_gain:.5f} is within noise "
                                   f"({cfg.kid_sigmas:g} σ = {noise:.5f})", figures)
    return Decision(True, f"{name} {fid:.3f} beats champion v{champion.version} "
                          f"({figures['champion_fid']:.3f}) by {gain:.3f}", figures)
