"""`ganops promote`: the FID gate. Moves the registry alias `champion` to the candidate only if it passes.

Exit codes for CI: 0 promoted (or already champion), 1 refused by the gate, 2 error (no candidate, a
missing metric, an unreachable store). See `ganops.gate` for the rule and `ganops.tracking.promotion`
for how concurrent promotes are serialised.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ganops.config import PromoteConfig, TrackingConfig, load_section
from ganops.errors import GanopsError
from pipelines.common import DebugOpt, ParamsOpt, check_writable, run


def _candidate_version(path: Path, version: str | None) -> str:
    if version is not None:
        return version
    if not path.is_file():
        raise GanopsError(f"{path}: no candidate; run `dvc repro evaluate` (or pass --version)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GanopsError(f"{path}: not JSON ({e})") from None
    if not info.get("registered") or not info.get("version"):
        raise GanopsError(f"{path}: the candidate was not registered (evaluate.register: false); nothing to promote")
    return str(info["version"])


def main(
    params: ParamsOpt = Path("params.yaml"),
    candidate: Annotated[Path, typer.Option(help="JSON written by `ganops evaluate`")] = Path(
        "models/candidate.json"),
    version: Annotated[str | None, typer.Option(help="registry version to judge instead of --candidate's")] = None,
    out: Annotated[Path, typer.Option(help="decision JSON to write (DVC metrics)")] = Path("metrics/promote.json"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the decision, change nothing")] = False,
    debug: DebugOpt = False,
) -> None:
    """Promote the candidate to `champion` if its FID passes the gate (exit 0), else exit 1."""

    def go() -> int:
        cfg = load_section(params, "promote", PromoteConfig)
        track = load_section(params, "tracking", TrackingConfig)
        check_writable(None if dry_run else out)
        ver = _candidate_version(candidate, version)

        from ganops import tracking
        from ganops.tracking.promotion import current_champion, get_version

        uri = tracking.resolve_tracking_uri(tracking.repo_root())
        tracking.check_store(uri)
        cand = get_version(uri, cfg.model_name, ver)
        if cand is None:
            raise GanopsError(f"registered model {cfg.model_name!r} has no version {ver} in {uri}")
        if dry_run:
            status, reason, figures, after = _decide(cfg, uri, cand, current_champion(uri, cfg.model_name), False)
            typer.echo(f"promote (dry run): v{ver} would be {status}: {reason}")
            return 1 if status == "rejected" else 0
        logged = {"promote": dataclasses.asdict(cfg), "candidate_version": ver}
        with tracking.stage_run("promote", track.experiment, logged, tracking.repo_root(),
                                system_metrics=False) as mlrun:
            from ganops.tracking.promotion import registry_lock

            with registry_lock(uri, cfg.model_name):
                before = current_champion(uri, cfg.model_name)  # read under the lock, not before it
                status, reason, figures, after = _decide(cfg, uri, cand, before, True)
            result = {"decision": status, "promoted": int(status == "promoted"), "reason": reason,
                      "model_name": cfg.model_name, "candidate_version": ver,
                      "champion_before": before.version if before else None,
                      "champion_after": after.version if after else None, "figures": figures}
            from ganops.io import write_json

            write_json(out, result)
            mlrun.log_metrics({k: v for k, v in figures.items() if isinstance(v, int | float)}
                              | {"promoted": result["promoted"]})
            mlrun.set_tags({"ganops.decision": status, "ganops.candidate_version": ver})
            mlrun.log_artifact(out)
        typer.echo(f"promote: {cfg.model_name} v{ver} {status}: {reason}; champion "
                   f"{'v' + after.version if after else 'none'}")
        return 1 if status == "rejected" else 0

    def _decide(cfg: PromoteConfig, uri: str, cand: Any, champ: Any,
                write: bool) -> tuple[str, str, dict[str, Any], Any]:
        from ganops.gate import Candidate, decide
        from ganops.tracking.promotion import apply_decision

        if champ is not None and champ.version == cand.version:
            return "unchanged", f"v{cand.version} is already the champion", {}, champ
        as_cand = Candidate(cand.version, cand.metrics, cand.tags.get("ganops.data_hash"))
        as_champ = Candidate(champ.version, champ.metrics, champ.tags.get("ganops.data_hash")) if champ else None
        d = decide(as_cand, as_champ, cfg)
        after = apply_decision(uri, cfg.model_name, cand.version, d.promote, d.reason, d.figures, champ) \
            if write else champ
        return ("promoted" if d.promote else "rejected"), d.reason, d.figures, after

    code = run(go, debug)
    raise typer.Exit(code)
