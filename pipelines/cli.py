"""The `ganops` command: every stage mounted as a subcommand."""

from typing import Annotated

import typer

import ganops
from pipelines import (
    evaluate,
    floor,
    flush,
    judge,
    lineage,
    prepare,
    pretrain,
    profile,
    promote,
    reference,
    sample,
    ship,
    train,
)

app = typer.Typer(
    name="ganops",
    help="A reproducible GAN factory: prepare → pretrain → train → evaluate → promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("prepare", help="Read, validate (Great Expectations) and write the dataset.")(prepare.main)
app.command("pretrain", help="Train the autoencoder whose weights initialise G and D.")(pretrain.main)
app.command("train", help="Adversarial training of the generator.")(train.main)
app.command("judge", help="Train the judge classifier (class coverage, judge FID).")(judge.main)
app.command("reference", help="Inception statistics of the test split (the FID reference).")(reference.main)
app.command("floor", help="Real-data floor: FID/KID of N training images vs the test split.")(floor.main)
app.command("evaluate", help="FID/KID of the generator; register it in MLflow.")(evaluate.main)
app.command("promote", help="Move the `champion` alias if the candidate passes the FID gate. Exit codes: 0 a "
            "decision was made (promoted, refused or unchanged; see metrics/promote.json), 1 refused with --strict, "
            "2 error (bad candidate or figure, store unreachable), 130 interrupted.")(promote.main)
app.command("sample", help="Draw a PNG grid from a registered (models:/...) or local generator.")(sample.main)
app.command("ship-stats", help="Put a run's test reference and floor in stats/shipped/ for fresh clones to reuse.")(
    ship.main)
app.command("profile", help="Merge a params profile (profiles/*.yaml, --set k=v) into params.yaml.")(profile.main)
app.command("lineage", help="Where a registered generator came from: commit, data, params, metrics.")(lineage.main)
app.command("flush", help="Send the tracking calls stages kept while the MLflow store did not answer, and end "
            "their runs. Exit codes: 0 all sent, 2 the store does not answer (they stay kept).")(flush.main)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ganops {ganops.__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="print the version and exit")] = False) -> None:
    """A reproducible GAN factory: prepare → pretrain → train → evaluate → promote."""


if __name__ == "__main__":
    app()
