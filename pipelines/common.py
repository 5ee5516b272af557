"""What every command shares: option types, error → exit-code mapping, SIGTERM handling, its MLflow run."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import typer

from ganops.errors import GanopsError, GanopsWarning
from ganops.io import check_writable as check_writable  # stages call it on their outputs before the work

T = TypeVar("T")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read this stage's section from")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show the full traceback on errors")]

# 128 + the signal number, as a shell reports a process killed by it: CI and DVC see which one it was
EXIT_SIGINT = 128 + signal.SIGINT  # 130, Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143, what CI runners, Kubernetes and torchrun send to stop a job


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt.

    A KeyboardInterrupt subclass so every `finally`/`except BaseException` cleanup runs as for Ctrl-C:
    temp files and directories go and the stage's MLflow run ends KILLED (tracking.stage_run).
    """


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises Terminated instead of killing the process outright.

    Only in the main thread (Python delivers signals there, and signal.signal refuses elsewhere), and
    not where SIGTERM was ignored by whoever started us. Not in torchrun ranks other than 0: they hold no
    MLflow run and write no outputs, and a rank blocked in a collective would only notice a Python
    handler once the collective returns, so the default (die at once) stops them faster; rank 0 then
    sees its peers gone and ends its run. A second SIGTERM is ignored so it cannot cut the cleanup
    short; SIGKILL still ends a cleanup that hangs.
    """
    if (threading.current_thread() is not threading.main_thread()
            or os.environ.get("RANK", "0") != "0"
            or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN):
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:  # None: the previous handler was not set from Python (then it was the default)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)



def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """ganops' own warnings (a tracking store that fell back, failed or was created, a shipped result that
    fails its digest) as one line each; other libraries' warnings as Python shows them."""
    if issubclass(category, GanopsWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _PY_SHOWWARNING(message, category, filename, lineno, file, line)


_PY_SHOWWARNING = warnings.showwarning


def run(fn: Callable[[], T], debug: bool = False) -> T:
    """Call `fn`; a GanopsError becomes its message on stderr and its exit code.

    Ctrl-C exits EXIT_SIGINT and SIGTERM EXIT_SIGTERM, both after the cleanup (see Terminated).
    """
    warnings.showwarning = _show_warning
    try:
        with _sigterm_raises():
            return fn()
    except GanopsError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except Terminated:
        typer.echo("terminated (SIGTERM)", err=True)
        raise typer.Exit(EXIT_SIGTERM) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_SIGINT) from None


@contextlib.contextmanager
def tracked_run(stage: str, params: Path, logged: dict[str, Any], data_meta: dict[str, Any] | None = None,
              system_metrics: bool = True) -> Iterator[Any]:
    """The stage's MLflow run (ganops.tracking.stage_run, which takes the experiment and params as values), in
    the experiment `MLFLOW_EXPERIMENT_NAME` or else the `tracking:` section of the params file `params` names.

    `logged`: the params the run records (the stage's sections, as dicts); `data_meta`: the prepared data's
    meta, recorded with the run; system metrics are sampled when `tracking.system_metrics` is on and the
    stage does not opt out (promote takes a second: nothing to sample).
    """
    from ganops import tracking
    from ganops.config import TrackingConfig
    from ganops.params import load_section

    track = load_section(params, "tracking", TrackingConfig)
    experiment = tracking.experiment_name(track.experiment)
    with tracking.stage_run(stage, experiment, logged, tracking.repo_root(), data_meta=data_meta,
                            system_metrics=system_metrics and track.system_metrics, params_file=params) as mlrun:
        yield mlrun


def prepared_meta(data: Path) -> dict[str, Any]:
    """The prepared data's meta.json, refused early if the networks cannot take its image size.

    Checked against the vocabulary (choices.py), not the networks' size plans: every stage reads the meta,
    and only the stages that build a network may depend on models/ (models/blocks.py asserts that its
    plans cover exactly IMAGE_SIZES, so the two rules agree).
    """
    from ganops.choices import CHANNELS, IMAGE_SIZES
    from ganops.data.prepared import read_meta

    meta = read_meta(data)
    for key, allowed in (("image_size", IMAGE_SIZES), ("channels", CHANNELS)):
        if meta[key] not in allowed:
            raise GanopsError(f"{data / 'meta.json'}: {key} {meta[key]} not supported by the networks; "
                              f"use one of {', '.join(map(str, allowed))}")
    return meta


class RenamedMetrics:
    """A MetricSink over `sink` that logs the keys in `names` under their new names: a command names what
    a core module logs generically (train's "epoch/score" is the judge FID when a judge scores)."""

    def __init__(self, sink: Any, names: dict[str, str]) -> None:
        self.sink, self.names = sink, names

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.sink.log_metrics({self.names.get(k, k): v for k, v in metrics.items()}, step)

    def log_image_grid(self, images: Any, key: str, step: int | None = None, nrow: int = 8) -> None:
        self.sink.log_image_grid(images, key, step=step, nrow=nrow)
