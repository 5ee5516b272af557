"""`ganops flush`: send what stages kept in the outbox while the MLflow store did not answer, and end their runs.

Any stage (and `ganops lineage`) does this first anyway; this command does only that, e.g. once the
server is back. Exit codes: 0 nothing left to send (runs still written by a running stage are left to it),
2 the store does not answer, or stopped answering (the calls stay kept).
"""

from __future__ import annotations

import typer

from pipelines.common import DebugOpt, run


def main(debug: DebugOpt = False) -> None:
    """Send the kept tracking calls of runs logged to this repo's store (MLFLOW_TRACKING_URI)."""

    def go() -> None:
        from ganops import tracking

        uri = tracking.resolve_tracking_uri(tracking.repo_root())
        tracking.check_store(uri)  # unreachable: "error: ...", exit 2
        summary = tracking.flush_outbox(uri, answers=True)
        if summary.pending:
            raise tracking.TrackingError(summary.line().removeprefix("tracking: "))
        typer.echo(f"flush: {summary.line().removeprefix('tracking: ')}" if summary.completed or summary.busy
                   else f"flush: nothing kept for {summary.uri} in {tracking.outbox_root()}")

    run(go, debug)
