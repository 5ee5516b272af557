"""Print DVC experiments as the markdown table of docs/results.md.

    python benchmarks/exp_table.py                 # every experiment of HEAD's baseline
    python benchmarks/exp_table.py --prefix r1-    # only names starting with r1-
    python benchmarks/exp_table.py -A              # experiments of all commits

Each row: the experiment's name, the params it changes against its baseline commit (the
`-S` overrides that reproduce it: `dvc exp run -S k=v ...`), then its metrics as logged by
the stages it ran: the judge FID of the best epoch (`metrics/train.json:best_score`, the
pruning score), training throughput and minutes, and, where the evaluate stage ran, fid10k,
kid10k, class-coverage entropy and the weakest class's share ratio. Reads
`dvc exp show --csv`, so it needs `dvc` on PATH and runs from the repo root. An experiment
that ran only up to `train` (`dvc exp run ... train`, the pruning runs) shows "–" for the
evaluate columns rather than its baseline's numbers.
"""

from __future__ import annotations

import argparse
import io
import subprocess

import pandas as pd

PARAM_SECTIONS = ("params.yaml:seed", "model.", "data.", "pretrain.", "train.", "judge.epochs",
                  "evaluate.", "promote.")
# (csv column, table header, format)
METRICS = [
    ("metrics/train.json:epochs", "epochs", "{:.0f}"),
    ("best_score", "judge FID", "{:.1f}"),
    ("metrics/train.json:img_per_s", "img/s", "{:.0f}"),
    ("train_seconds", "train min", "{:.1f}"),  # seconds in the csv; divided below
    ("fid10k", "FID10k", "{:.2f}"),
    ("kid10k", "KID10k", "{:.4f}"),
    ("judge.normalized_entropy", "coverage H", "{:.3f}"),
    ("judge.min_share_ratio", "min share", "{:.2f}"),
]


def _param_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(PARAM_SECTIONS) and "protocol" not in c
            and not c.startswith("judge.") or c == "judge.epochs"]


def _fmt(value: object, fmt: str) -> str:
    try:
        return fmt.format(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"


def table(df: pd.DataFrame, prefix: str) -> str:
    """Markdown rows for the experiments whose name starts with `prefix`."""
    params = _param_columns(df)
    baselines = df[df["typ"] == "baseline"].set_index("rev")
    exps = df[(df["typ"] != "baseline") & df["Experiment"].fillna("").str.startswith(prefix)]
    exps = exps[exps["State"].fillna("Success") == "Success"]
    header = ["experiment", "overrides"] + [h for _, h, _ in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in exps.sort_values("Created").iterrows():
        base = baselines.iloc[0] if row["parent"] not in baselines.index else baselines.loc[row["parent"]]
        changed = [f"{c.split(':')[-1]}={row[c]}" for c in params if str(row[c]) != str(base[c])]
        cells = [str(row["Experiment"]), " ".join(f"`{c}`" for c in changed) or "(baseline params)"]
        values = {col: row.get(col) for col, _, _ in METRICS}
        values["train_seconds"] = float(values["train_seconds"]) / 60
        if str(row.get("fid10k")) == str(base.get("fid10k")):
            # A run that stopped before `evaluate` carries its baseline's evaluate.json.
            values.update({col: None for col, _, _ in METRICS[4:]})
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
