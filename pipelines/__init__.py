"""Thin Typer commands, one per DVC stage: parse options, load a params section, call src/.

A checkout's `pipelines` runs with the same checkout's `src/ganops`. DVC's stage commands are
`python -m pipelines.cli <stage>` run in the repo root, so `pipelines` comes from that checkout;
the line below makes `ganops` come from it too, instead of from wherever the package was
installed in editable mode. That matters for `dvc exp run --queue`: each queued experiment runs in
a temporary copy of its commit, and must run that commit's code, not the workspace's (which may
have moved on while the queue ran). In an installed wheel there is no sibling `src/`; nothing
changes.
"""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parent.parent / "src"
if (_SRC / "ganops" / "__init__.py").is_file() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))
