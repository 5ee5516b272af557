"""Where a result came from: git state, parameter hashes and the pipeline key.

No MLflow here (that is `ganops.tracking`): these helpers only shell out to git and
hash bytes, so they are cheap to call and easy to test. Every function degrades to
"unknown" outside a git repository instead of raising.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

PIPELINE_ENV = "GANOPS_PIPELINE_ID"
UNKNOWN = "unknown"

# Files a running `dvc repro` rewrites itself; they must not change the pipeline key
# between its stages (DVC appends stage outs to .gitignore and updates dvc.lock).
_REPRO_WRITTEN = (":(exclude,glob)**/dvc.lock", ":(exclude,glob)**/.gitignore")


def _git(root: Path, *args: str) -> str | None:
    """Stdout of `git -C root args...`, or None if git is missing or the call fails."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", errors="replace")


def repo_root() -> Path:
    """The git top level containing the current directory, or the current directory."""
    top = _git(Path.cwd(), "rev-parse", "--show-toplevel")
    return Path(top.strip()).resolve() if top and top.strip() else Path.cwd().resolve()


def git_commit(root: Path) -> str:
    """Full SHA of HEAD, or "unknown" (not a repo, or no commit yet)."""
    out = _git(root, "rev-parse", "--verify", "HEAD")
    return out.strip() if out and out.strip() else UNKNOWN


def git_dirty(root: Path) -> str:
    """"true" if tracked source differs from HEAD, "false", or "unknown".

    Untracked files and what a running `dvc repro` writes itself (dvc.lock, .gitignore, stage outs,
    metrics and plots) do not count: otherwise every stage after the first would call its own
    commit dirty. In a DVC experiment (`dvc exp run`, which sets DVC_EXP_NAME) the params files do not
    count either: DVC commits them into the experiment, which the run is tagged with, so the run can
    still be recovered exactly (a CI profile applied as an experiment is not "dirty").
    """
    if git_commit(root) == UNKNOWN:
        return UNKNOWN
    excludes = [*_REPRO_WRITTEN, *(f":(exclude,literal){p}" for p in _dvc_outputs(root))]
    if os.environ.get("DVC_EXP_NAME", "").strip():
        excludes.append(":(exclude,glob)**/params.yaml")
    out = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes)
    return UNKNOWN if out is None else str(bool(out.strip())).lower()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_sha256(*dirs: Path) -> str:
    """sha256 over every .py file under `dirs` (its path relative to its dir, then its bytes), in sorted order:
    any edit, added or removed module changes it."""
    h = hashlib.sha256()
    for d in dirs:
        for f in sorted(Path(d).rglob("*.py")):
            h.update(f"{d.name}/{f.relative_to(d).as_posix()}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: dataclasses -> dicts, tuples -> lists, Paths -> str; keys as str."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON; dataclasses, tuples and Paths are normalised first."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), default=str)


def params_hash(params: Any) -> str:
    """First 16 hex chars of sha256(canonical JSON): equal dicts give equal hashes."""
    return sha256_hex(canonical_json(params).encode())[:16]


def _dvc_outputs(root: Path) -> list[str]:
    """Paths (relative to root) that stages in <root>/dvc.yaml write: outs, metrics, plots.

    Best effort: templated paths (`${...}`) and unreadable files are skipped.
    """
    try:
        doc = yaml.safe_load((root / "dvc.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(doc, dict):
        return []

    def names(entries: Any) -> list[str]:
        items = entries if isinstance(entries, list) else [entries] if entries else []
        return [k for e in items for k in (e if isinstance(e, dict) else [e]) if isinstance(k, str)]

    paths: list[str] = []
    for stage in (doc.get("stages") or {}).values():
        if isinstance(stage, dict):
            wdir = PurePosixPath(str(stage.get("wdir", ".")))
            for field in ("outs", "metrics", "plots"):
                paths += [str(wdir / p) for p in names(stage.get(field))]
    paths += names(doc.get("metrics"))
    paths += names(doc.get("plots"))  # ids that are not paths exclude nothing: harmless
    return [os.path.normpath(p) for p in paths if "${" not in p and not os.path.isabs(p)]


def code_diff_hash(root: Path) -> str:
    """sha256 of `git diff HEAD`, leaving out files a `dvc repro` writes while it runs."""
    if git_commit(root) == UNKNOWN:
        return UNKNOWN
    excludes = [*_REPRO_WRITTEN, *(f":(exclude,literal){p}" for p in _dvc_outputs(root))]
    out = _git(root, "diff", "--no-ext-diff", "--binary", "HEAD", "--", ".", *excludes)
    return UNKNOWN if out is None else sha256_hex(out.encode())


def pipeline_key(root: Path, params_file: Path) -> str:
    """A key shared by every stage run of one `dvc repro` (16 hex chars unless set by env).

    `GANOPS_PIPELINE_ID` wins if set. Otherwise hash(commit, hash of the working-tree
    diff, sha256 of `params_file`): stages of one repro on the same code and params agree,
    and any edit to code or params starts a new key. `params_file` is the file the stage read
    (its --params, relative to the working directory as the stage opened it), not
    <root>/params.yaml: a run with `--params other.yaml` is keyed by other.yaml, which the
    git diff does not see when it is untracked or outside the repo.
    """
    if env := os.environ.get(PIPELINE_ENV):
        return env
    params_sha = sha256_hex(params_file.read_bytes()) if params_file.is_file() else "none"
    parts = [git_commit(root), code_diff_hash(root), params_sha]
    return sha256_hex("\n".join(parts).encode())[:16]
