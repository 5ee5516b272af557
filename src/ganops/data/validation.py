"""Great Expectations checks on the prepared-data manifest.

Three tables are validated, each with its own suite so Data Docs read naturally:
- `manifest`: one row per image (split, index, label, sha1, mean, std, channels, height, width)
- `splits`: one row per split with its row count and the bounds it must fall in
- `classes`: one row per (split, label) with its share of the split

GX is imported lazily (it costs seconds) and run in an ephemeral context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ganops.io import atomic_dir, write_atomic

REPORT_NAME = "report.json"  # under the validation dir; `ganops prepare` logs it to MLflow


@dataclass(frozen=True)
class ValidationSpec:
    """What the data must look like; built by the prepare step from source + params."""

    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    split_bounds: dict[str, tuple[int, int]]  # split -> (min rows, max rows)
    balance_tolerance: float  # each class share within (1 ± tol) / K


@dataclass
class Failure:
    table: str
    expectation: str
    column: str | None
    observed: Any
    examples: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        col = f" on {self.column}" if self.column else ""
        ex = "".join(f"\n      e.g. {row}" for row in self.examples)
        return f"  - {self.table}: {self.expectation}{col} (observed: {self.observed}){ex}"


@dataclass
class ValidationReport:
    success: bool
    failures: list[Failure]
    evaluated: int
    report_path: Path
    docs_index: Path

    def summary(self) -> str:
        head = (f"{len(self.failures)} of {self.evaluated} expectations failed "
                f"(report {self.report_path}, Data Docs {self.docs_index}):")
        return "\n".join([head, *(f.describe() for f in self.failures)])


def split_table(manifest: pd.DataFrame, bounds: dict[str, tuple[int, int]]) -> pd.DataFrame:
    counts = manifest["split"].value_counts()
    return pd.DataFrame([{"split": s, "rows": int(counts.get(s, 0)), "min_rows": lo, "max_rows": hi}
                         for s, (lo, hi) in bounds.items()])


def class_table(manifest: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    rows = []
    for split, g in manifest.groupby("split", sort=True):
        counts = g["label"].value_counts()
        for k in range(num_classes):
            n = int(counts.get(k, 0))
            rows.append({"split": split, "label": k, "count": n, "share": n / len(g)})
    return pd.DataFrame(rows)


def cross_split_duplicates(manifest: pd.DataFrame) -> pd.Series:
    """True for rows whose pixels (sha1) also occur in another split."""
    splits_per_hash = manifest.groupby("sha1")["split"].transform("nunique")
    return splits_per_hash > 1


def _suites(spec: ValidationSpec) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe

    c, h, w = spec.shape
    k = spec.num_classes
    lo_share = (1 - spec.balance_tolerance) / k
    hi_share = (1 + spec.balance_tolerance) / k
    return {
        "manifest": [
            gxe.ExpectColumnValuesToNotBeNull(column="sha1"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(k))),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=sorted(spec.split_bounds)),
            gxe.ExpectColumnValuesToBeBetween(column="mean", min_value=0, max_value=255),
            gxe.ExpectColumnValuesToBeBetween(column="std", min_value=0, max_value=127.5, strict_min=True),
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[c]),
            gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[h]),
            gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[w]),
            gxe.ExpectColumnValuesToBeInSet(column="in_other_split", value_set=[False]),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", "index"]),
        ],
        "splits": [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="rows", column_B="min_rows", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="max_rows", column_B="rows", or_equal=True),
        ],
        "classes": [
            gxe.ExpectColumnValuesToBeBetween(column="share", min_value=lo_share, max_value=hi_share),
        ],
    }


def _examples(df: pd.DataFrame, idx: list[Any] | None, n: int = 3) -> list[dict[str, Any]]:
    if not idx:
        return []
    rows = df.loc[[i for i in idx[:n] if i in df.index]]
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows.to_dict("records")]


def validate(manifest: pd.DataFrame, spec: ValidationSpec, out_dir: Path) -> ValidationReport:
    """Run all suites; write `out_dir/report.json` and Data Docs under `out_dir/docs/` (each replaced whole)."""
    tables = {
        "manifest": manifest.assign(in_other_split=cross_split_duplicates(manifest)),
        "splits": split_table(manifest, spec.split_bounds),
        "classes": class_table(manifest, spec.num_classes),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = out_dir / "docs"
    with atomic_dir(docs_dir) as building:  # a full disk or a kill mid-build leaves the previous docs whole
        failures, results, evaluated = _run_suites(tables, spec, building)
    report_path = out_dir / REPORT_NAME
    report = {"success": not failures, "evaluated": evaluated,
              "failures": [f.__dict__ for f in failures], "results": results}
    write_atomic(report_path, json.dumps(report, indent=2, default=str).encode())  # no .tmp left on a signal
    return ValidationReport(not failures, failures, evaluated, report_path, docs_dir / "index.html")


def _run_suites(tables: dict[str, pd.DataFrame], spec: ValidationSpec,
                docs_dir: Path) -> tuple[list[Failure], dict[str, Any], int]:
    """Validate each table with its suite in an ephemeral GX context and build Data Docs into `docs_dir`;
    returns the failures, each suite's JSON result and the number of expectations evaluated."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    # The ephemeral context comes with a `local_site` in a fresh /tmp dir; building it left
    # 4 MB behind per prepare (3 GB after a few hundred test runs). Ours is the only site.
    for site in ctx.get_site_names():
        ctx.delete_data_docs_site(site)
    ctx.add_data_docs_site(site_name="ganops", site_config={
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir.resolve())},
    })
    source = ctx.data_sources.add_pandas("prepared")
    failures: list[Failure] = []
    results: dict[str, Any] = {}
    evaluated = 0
    for name, expectations in _suites(spec).items():
        df = tables[name]
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=name))
        for e in expectations:
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        res = vd.run(batch_parameters={"dataframe": df},
                     result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5})
        results[name] = res.to_json_dict()
        for er in res.results:
            evaluated += 1
            if er.success:
                continue
            kw = er.expectation_config.kwargs
            r = er.result or {}
            observed = r.get("observed_value")
            if observed is None and r.get("unexpected_count") is not None:
                observed = f"{r['unexpected_count']} unexpected rows"
            failures.append(Failure(table=name, expectation=er.expectation_config.type,
                                    column=kw.get("column") or kw.get("column_A") or kw.get("column_list"),
                                    observed=observed, examples=_examples(df, r.get("unexpected_index_list"))))
    ctx.build_data_docs()
    return failures, results, evaluated
