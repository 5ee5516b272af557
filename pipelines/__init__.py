"""Thin Typer commands, one per DVC stage: parse options, load a params section, call src/."""
