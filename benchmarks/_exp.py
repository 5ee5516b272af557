"""Generator files of DVC experiments, for the scripts that compare generators side by side.

`exp:NAME` names the `models/generator.pt` that experiment NAME's train stage wrote: its md5 from the
experiment commit's `dvc.lock`, its bytes from the local DVC cache. Anything else is a path.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def resolve(spec: str, out: str = "models/generator.pt") -> tuple[str, Path]:
    """(display name, file) for a path or `exp:NAME`; SystemExit with one line if it cannot be found."""
    if not spec.startswith("exp:"):
        return Path(spec).stem, Path(spec)
    name = spec.removeprefix("exp:")
    listing = _git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps")
    refs = [line.split() for line in listing.splitlines()]
    revs = [rev for ref, rev in refs if ref.rsplit("/", 1)[-1] == name and not ref.startswith("refs/exps/apply")]
    if len(revs) != 1:
        raise SystemExit(f"{spec}: {'no' if not revs else len(revs)} DVC experiments of that name in this repo")
    lock = yaml.safe_load(_git("show", f"{revs[0]}:dvc.lock"))
    md5s = [o["md5"] for st in lock["stages"].values() for o in st.get("outs", []) if o["path"] == out]
    if len(md5s) != 1:
        raise SystemExit(f"{spec}: its dvc.lock has no single {out}")
    path = Path(".dvc/cache/files/md5") / md5s[0][:2] / md5s[0][2:]
    if not path.is_file():
        raise SystemExit(f"{spec}: {out} ({md5s[0]}) is not in the local DVC cache; `dvc exp pull` it first")
    return name, path
