"""`ganops promote`: the FID gate. Moves the registry alias `champion` to the candidate only if it passes.

Exit codes: 0 a decision was made and recorded (promoted, refused or unchanged; with --strict a refusal
exits 1, the code CI's gate needs), 2 error (no candidate or a malformed candidate file, a missing,
unreadable or out-of-range metric of the candidate or the champion, an unreachable store, the promotion
lock still held after LOCK_WAIT_S; under CI=true, --strict against a local store without
--allow-local-store: a gate that judges a store the job just created would pass on nothing), 130
interrupted (Ctrl-C). A refusal exits 0 by default so that a
`dvc exp run` of a worse variant still completes and is saved as an experiment. See `ganops.gate` for the
rule and `ganops.tracking.promotion` for how concurrent promotes are serialised.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ganops.config import PromoteConfig
from ganops.errors import GanopsError
from ganops.params import load_section
from pipelines.common import DebugOpt, ParamsOpt, check_writable, run, tracked_run
from pipelines.metrics_files import detail_of, write_metrics

# metrics/promote.json, what `dvc exp show` shows: promoted | refused | unchanged. The versions, the reason and
# the gate's figures go to its _detail.json.
SUMMARY = ("decision",)


def _candidate_version(path: Path, version: str | None, model_name: str) -> str:
    """The version to judge: --version, else the one `ganops evaluate` wrote to `path`
    ({"registered": true, "name": ..., "version": "<n>", ...}); GanopsError naming the file otherwise."""
    if version is not None:
        return version
    if not path.is_file():
        raise GanopsError(f"{path}: no candidate; run `dvc repro evaluate` (or pass --version)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GanopsError(f"{path}: not JSON ({e})") from None
    except OSError as e:
        raise GanopsError(f"{path}: unreadable ({e.strerror or e})") from None
    if not isinstance(info, dict):
        raise GanopsError(f"{path}: expected the JSON object `ganops evaluate` writes, found a {type(info).__name__}")
    if not isinstance(info.get("registered"), bool):
        raise GanopsError(f"{path}: 'registered' must be true or false, found {info.get('registered')!r:.60}")
    if not info["registered"]:
        raise GanopsError(f"{path}: the candidate was not registered (evaluate.register: false); nothing to promote")
    ver = info.get("version")
    if isinstance(ver, bool) or not isinstance(ver, str | int) or not re.fullmatch(r"[1-9][0-9]*", str(ver)):
        raise GanopsError(f"{path}: 'version' must be a registry version number, found {ver!r:.60}")
    if "name" in info and info["name"] != model_name:
        raise GanopsError(f"{path}: the candidate is a version of {info['name']!r:.60}, not of promote.model_name "
                          f"{model_name!r}; re-run `dvc repro evaluate`")
    return str(ver)


def _under_ci() -> bool:
    """CI=true (GitHub Actions, GitLab and most runners set it; so does the CI of this repo)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def gate_and_apply(cfg: PromoteConfig, uri: str, cand: Any, champ: Any,
                   write: bool) -> tuple[str, str, dict[str, Any], Any]:
    """Run the gate on two registered versions: (promoted | refused | unchanged, the reason, the gate's figures,
    the champion after); `write` moves the alias and records the decision."""
    from ganops.gate import VersionRecord, should_promote
    from ganops.tracking.promotion import apply_decision

    if champ is not None and champ.version == cand.version:
        return "unchanged", f"v{cand.version} is already the champion", {}, champ
    # The tag strings, not the parsed metrics: the gate refuses a value it cannot read, where the
    # parsed view (for display) would silently drop it.
    as_cand = VersionRecord(cand.version, cand.metric_tags, cand.tags.get("ganops.data_hash"))
    as_champ = VersionRecord(champ.version, champ.metric_tags, champ.tags.get("ganops.data_hash")) if champ else None
    d = should_promote(as_cand, as_champ, cfg)
    after = apply_decision(uri, cfg.model_name, cand.version, d.promote, d.reason, d.figures, champ) \
        if write else champ
    return ("promoted" if d.promote else "refused"), d.reason, d.figures, after


def main(
    params: ParamsOpt = Path("params.yaml"),
    candidate: Annotated[Path, typer.Option(help="JSON written by `ganops evaluate`")] = Path(
        "models/candidate.json"),
    version: Annotated[str | None, typer.Option(help="registry version to judge instead of --candidate's")] = None,
    out: Annotated[Path, typer.Option(help="decision JSON to write (DVC metrics); the reason and figures go to "
                                          "<name>_detail.json")] = Path("metrics/promote.json"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the decision, change nothing")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when the candidate is refused (CI's gate)")] = False,
    allow_local_store: Annotated[bool, typer.Option(
        "--allow-local-store", help="with CI=true and --strict: judge against a local (sqlite/file) store "
                                    "anyway; without it that is refused (exit 2): the team's registry is not "
                                    "there")] = False,
    debug: DebugOpt = False,
) -> None:
    """Promote the candidate to `champion` if it passes the FID gate; record the decision (promoted,
    refused, unchanged) in --out.

    Exit codes: 0 decided (a refusal too, so `dvc exp run` keeps a worse variant as an experiment);
    1 refused, with --strict only; 2 error (a bad candidate file or metric, an unreachable store), never a
    promotion; 130 interrupted.
    """
    refused_code = 1 if strict else 0

    def go() -> int:
        cfg = load_section(params, "promote", PromoteConfig)
        check_writable(*([] if dry_run else [out, detail_of(out)]))
        ver = _candidate_version(candidate, version, cfg.model_name)

        from ganops import tracking
        from ganops.tracking.promotion import current_champion, get_version

        uri = tracking.resolve_tracking_uri(tracking.repo_root())
        if strict and _under_ci() and tracking.is_local_store(uri) and not allow_local_store:
            blank = " (MLFLOW_TRACKING_URI is set but empty: treated as unset)" \
                if os.environ.get("MLFLOW_TRACKING_URI", "x").strip() == "" else ""
            raise GanopsError(f"CI=true: the gate would judge the local store {uri}{blank}, not the team's registry "
                              "(set MLFLOW_TRACKING_URI to the team's server, or pass --allow-local-store)")
        tracking.check_store(uri)
        cand = get_version(uri, cfg.model_name, ver)
        if cand is None:
            raise GanopsError(f"registered model {cfg.model_name!r} has no version {ver} in {uri}")
        if dry_run:
            champ = current_champion(uri, cfg.model_name)
            status, reason, figures, after = gate_and_apply(cfg, uri, cand, champ, False)
            typer.echo(f"promote (dry run): v{ver} would be {status}: {reason}")
            return refused_code if status == "refused" else 0
        logged = {"promote": dataclasses.asdict(cfg), "candidate_version": ver}
        with tracked_run("promote", params, logged, system_metrics=False) as mlrun:
            from ganops.tracking.promotion import registry_lock

            with registry_lock(uri, cfg.model_name, notify=lambda line: typer.echo(f"promote: {line}", err=True)):
                before = current_champion(uri, cfg.model_name)  # read under the lock, not before it
                status, reason, figures, after = gate_and_apply(cfg, uri, cand, before, True)
            result = {"decision": status, "promoted": int(status == "promoted"), "reason": reason,
                      "model_name": cfg.model_name, "candidate_version": ver,
                      "champion_before": before.version if before else None,
                      "champion_after": after.version if after else None, "figures": figures}
            write_metrics(out, {k: result[k] for k in SUMMARY}, result, mlrun)
            mlrun.log_metrics({k: v for k, v in figures.items() if isinstance(v, int | float)}
                              | {"promoted": result["promoted"]})
            mlrun.set_tags({"ganops.decision": status, "ganops.candidate_version": ver})
        typer.echo(f"promote: {cfg.model_name} v{ver} {status}: {reason}; champion "
                   f"{'v' + after.version if after else 'none'}")
        return refused_code if status == "refused" else 0

    code = run(go, debug)
    raise typer.Exit(code)
