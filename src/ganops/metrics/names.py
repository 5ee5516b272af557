"""Metric names, stylegan2-ada style: kind + N, where N is the number of generated images (`fid10k`, `kid2500`).

The one rule for building and reading them: registry, floor, evaluation, the gate and lineage all go through
`MetricName`. Torch-free and import-free on purpose: the stages that only need the vocabulary (reference checks
`evaluate.metrics`, the gate reads registry tags) must not depend on the metrics' implementations, so an edit
to a formula reruns only the stages that compute it.

    MetricName.parse("fid10k")       MetricName(kind="fid", n=10000)
    str(MetricName("kid", 2500))     "kid2500"
    MetricName.parse("fid10k_std")   GanopsError (use `MetricName.of(key)` for "a name or None")
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ganops.errors import GanopsError

# Every metric kind, in the order `evaluate.metrics` lists them; each has its function in registry.py (which
# refuses to register a kind not named here, and a test holds the two lists equal).
KINDS = ("fid", "kid", "pr")
STANDARD_N = (10_000, 5_000, 2_000)
_NAME = re.compile(r"([a-z]+?)(\d+)(k?)")


@dataclass(frozen=True)
class MetricName:
    """A metric's protocol name: `kind` (a registered metric function) and `n` (generated images it uses)."""

    kind: str
    n: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS or isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise GanopsError(f"no metric {self.kind!r} at N={self.n!r}; kinds are {', '.join(KINDS)}, N >= 1")

    def __str__(self) -> str:
        """("fid", 10000) → "fid10k"; ("fid", 2500) → "fid2500"."""
        return f"{self.kind}{self.n // 1000}k" if self.n % 1000 == 0 else f"{self.kind}{self.n}"

    @classmethod
    def of(cls, key: str) -> MetricName | None:
        """The name `key` spells, or None (a derived key such as "kid10k_std", "floor/fid10k", an unknown kind)."""
        m = _NAME.fullmatch(key)
        if m is None or m.group(1) not in KINDS or int(m.group(2)) == 0:
            return None
        name = cls(m.group(1), int(m.group(2)) * (1000 if m.group(3) else 1))
        return name if str(name) == key else None  # one spelling per name: "fid10000" is "fid10k"

    @classmethod
    def parse(cls, key: str) -> MetricName:
        """"fid10k" → MetricName("fid", 10000); a GanopsError naming the rule for anything else."""
        name = cls.of(key)
        if name is None:
            raise GanopsError(f"unknown metric {key!r}; expected <kind><N>[k] with kind in {list(KINDS)}, "
                              f"e.g. {', '.join(standard_names()[:3])}")
        return name

    def with_kind(self, kind: str) -> MetricName:
        """The same N measured by another kind: fid10k.with_kind("kid") → kid10k."""
        return MetricName(kind, self.n)


def metric_kinds() -> tuple[str, ...]:
    """The metric kinds, in order (what `evaluate.metrics` may list)."""
    return KINDS


def standard_names() -> list[str]:
    """Every kind at N = 10k, 5k, 2k (any other N parses too)."""
    return [str(MetricName(kind, n)) for kind in KINDS for n in STANDARD_N]
