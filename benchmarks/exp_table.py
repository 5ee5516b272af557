"""Print DVC experiments as the markdown table of docs/results.md.

    python benchmarks/exp_table.py                 # every experiment of HEAD's baseline
    python benchmarks/exp_table.py --prefix r1-    # only names starting with r1-
    python benchmarks/exp_table.py -A              # experiments of all commits

Each row: the experiment's name, the params it changes against its baseline commit (the
`-S` overrides that reproduce it: `dvc exp run -S k=v ...`), then its metrics as logged by
the stages it ran: the judge FID of the best epoch (`metrics/train.json:best_score`, the
pruning score), training compute (TFLOP), epochs and minutes (from the experiment's
`metrics/*_detail.json`), and, where the evaluate stage ran, fid10k, kid10k and the weakest
class's share ratio. Reads
`dvc exp show --csv`, so it needs `dvc` on PATH and runs from the repo root. An experiment
that ran only up to `train` (`dvc exp run ... train`, the pruning runs) shows "–" for the
evaluate columns rather than its baseline's numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess

import pandas as pd

PARAM_SECTIONS = ("params.yaml:seed", "model.", "data.", "pretrain.", "train.", "judge.epochs",
                  "evaluate.", "promote.")
# (column, table header, format): a metrics column of `dvc exp show --csv`, or "<stage>:<key>" of the
# experiment's metrics/<stage>_detail.json (read from its commit), where the figures that are not compared
# in `dvc exp show` (minutes, epochs) live
METRICS = [
    ("train:epochs", "epochs", "{:.0f}"),
    ("best_score", "judge FID", "{:.1f}"),
    ("total_flops", "TFLOP", "{:.1f}"),  # pretrain + train; divided below
    ("pretrain:seconds", "pretrain min", "{:.1f}"),  # divided below
    ("train:seconds", "train min", "{:.1f}"),  # divided below
    ("fid10k", "FID10k", "{:.2f}"),
    ("kid10k", "KID10k", "{:.4f}"),
    ("judge/min_share_ratio", "min share", "{:.2f}"),
]
EVALUATE_COLUMNS = 5  # METRICS[5:] come from the evaluate stage
SCALE = {"total_flops": 1e12, "pretrain:seconds": 60, "train:seconds": 60}


def _detail(rev: str, stage: str) -> dict:
    """metrics/<stage>_detail.json as committed in `rev` (an experiment's or a baseline's commit); {} if absent."""
    spec = f"{rev}:metrics/{stage}_detail.json" if rev != "workspace" else None
    try:
        text = subprocess.run(["git", "show", spec], check=True, capture_output=True, text=True).stdout if spec \
            else open(f"metrics/{stage}_detail.json", encoding="utf-8").read()
        return json.loads(text)
    except (subprocess.CalledProcessError, OSError, json.JSONDecodeError):
        return {}


def _value(row: pd.Series, col: str, details: dict[str, dict]) -> object:
    if ":" not in col:
        return row.get(col)
    stage, key = col.split(":", 1)
    if stage not in details:
        details[stage] = _detail(str(row["rev"]), stage)
    return details[stage].get(key)


def _param_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(PARAM_SECTIONS) and "protocol" not in c
            and not c.startswith("judge.") or c == "judge.epochs"]


def _fmt(value: object, fmt: str) -> str:
    try:
        return fmt.format(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"


def _param(value: object) -> str:
    """A param as `-S` takes it: 3.0 -> 3 (pandas reads int columns with gaps as float)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def table(df: pd.DataFrame, prefix: str) -> str:
    """Markdown rows for the experiments whose name starts with `prefix`.

    `dvc exp show` lists each baseline commit followed by its experiments, so an experiment's
    baseline is the nearest baseline row above it; its overrides are the params that differ.
    """
    params = _param_columns(df)
    base_of = df["typ"].eq("baseline").cumsum()  # row -> index of its baseline block
    baselines = df[df["typ"] == "baseline"].set_index(base_of[df["typ"] == "baseline"])
    keep = (df["typ"] != "baseline") & df["Experiment"].fillna("").str.startswith(prefix)
    if "State" in df:  # only when some experiment is not a success
        keep &= df["State"].fillna("Success") == "Success"
    header = ["experiment", "overrides"] + [h for _, h, _ in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i in df[keep].sort_values("Created").index:
        row, base = df.loc[i], baselines.loc[base_of[i]]
        changed = [f"{c.split(':')[-1]}={_param(row[c])}" for c in params
                   if pd.notna(row[c]) and _param(row[c]) != _param(base[c])]
        cells = [str(row["Experiment"]), " ".join(f"`{c}`" for c in changed) or "(baseline params)"]
        details: dict[str, dict] = {}
        values = {col: _value(row, col, details) for col, _, _ in METRICS}
        for col, unit in SCALE.items():
            values[col] = float(values[col]) / unit if values[col] is not None and pd.notna(values[col]) else None
        if str(row.get("fid10k")) == str(base.get("fid10k")):
            # A run that stopped before `evaluate` carries its baseline's evaluate.json.
            values.update({col: None for col, _, _ in METRICS[EVALUATE_COLUMNS:]})
        cells += [_fmt(values[col], fmt) for col, _, fmt in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default="", help="only experiments whose name starts with this")
    ap.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit")
    args = ap.parse_args()
    cmd = ["dvc", "exp", "show", "--csv", "--no-pager"] + (["-A"] if args.all_commits else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(table(pd.read_csv(io.StringIO(out)), args.prefix))


if __name__ == "__main__":
    main()
