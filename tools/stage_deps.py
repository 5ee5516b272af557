"""The project code each DVC stage runs, found from its imports: dvc.yaml's code deps, generated and checked.

    python -m tools.stage_deps            report the drift between dvc.yaml and the imports; exit 1 if any
    python -m tools.stage_deps --write    rewrite the code deps in dvc.yaml to match

Hand-kept lists drift: a new import in a shared module silently stops rerunning the stages that use it.
So the lists are derived. A stage whose cmd is `python -m pipelines.cli <command>` runs:

- `pipelines/__init__.py` and `pipelines/cli.py` (what `python -m` imports and executes), and
- the module whose function cli.py mounts as `<command>` (read from cli.py's `app.command("<command>")(mod.fn)`
  lines, so renaming a module needs no edit here),

and then every project module those import, transitively: module-level and function-level imports (we do
not know which functions a stage calls, so a lazy import counts wherever it is), `from pkg import name`
where `name` is a submodule, relative imports, and every parent package's `__init__.py` (Python runs it
on the way in). Imports under `if TYPE_CHECKING:` never run and do not count. A module that names a
sibling .py file in a string (code it hands to another tool, such as MLflow's models-from-code, without
importing it) depends on that file as if it imported it. Modules outside the source roots are third-party.

cli.py imports every command's module eagerly, to mount them all; its edges to the *other* commands'
modules are not followed. Their import-time code only defines functions and option types (Typer reads
their signatures to build the command line, but never runs their bodies), so no change to them can
change this stage's outputs, while counting them would rerun every stage when any one command changes.
Everything those bodies import lazily is likewise not run.

A directory replaces its files when the closure holds every .py file under it (recursively): DVC then
hashes the directory, with __pycache__ excluded by .dvcignore. Deps that are not code (data, models,
stats, `${...}` paths, non-.py files) stay first, in their order; the code deps follow, sorted. The
rewrite edits only the lines of each stage's `deps:` list, so comments and layout elsewhere survive.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Where `python -m pipelines.cli` finds project modules: src/ (pipelines/__init__.py puts it first on
# sys.path) and the repo root (the working directory of every DVC stage).
SOURCE_ROOTS = (ROOT / "src", ROOT)
CLI = "pipelines.cli"
STAGE_CMD = re.compile(r"^\s*python\s+-m\s+pipelines\.cli\s+(\S+)")
TESTS = ROOT / "tests"  # stages must never import the test suite


def module_file(name: str) -> Path | None:
    """The file Python would run for project module `name`, or None (third-party or missing)."""
    if not name:
        return None
    rel = Path(*name.split("."))
    for root in SOURCE_ROOTS:
        for f in (root / rel / "__init__.py", root / rel.with_name(rel.name + ".py")):
            if f.is_file():
                return f
    return None


def module_name(f: Path) -> str:
    root = next(r for r in SOURCE_ROOTS if f.is_relative_to(r))  # src/ first, as on sys.path
    parts = f.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def with_parents(name: str) -> list[Path]:
    """`a.b.c` -> the files of a, a.b and a.b.c that are project modules (importing one runs its parents)."""
    parts = name.split(".")
    return [f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i])))]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, but not the bodies of `if TYPE_CHECKING:` (which never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


@cache
def _tree(f: Path) -> ast.Module:
    return ast.parse(f.read_text(), filename=str(f))


def _from_base(f: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module_name(f).split(".")
    if f.name != "__init__.py":
        package = package[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


@cache
def imports_of(f: Path) -> frozenset[Path]:
    """Project files that running `f` may execute directly: its imports (with their parent packages)
    and sibling .py files it names."""
    out: set[Path] = set()
    for node in _nodes(_tree(f)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.update(with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(f, node)
            out.update(with_parents(base))
            for alias in node.names:  # `from pkg import name`: a submodule if there is one, else an attribute
                if alias.name != "*" and (sub := module_file(f"{base}.{alias.name}")):
                    out.add(sub)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".py"):
            sibling = f.parent / node.value
            if "/" not in node.value and sibling != f and sibling.is_file():
                out.add(sibling)
    return frozenset(out)


def mounted_commands(cli: Path) -> dict[str, Path]:
    """Command name -> the module whose function cli.py mounts under it: `app.command("name", ...)(mod.fn)`,
    or `(fn)` for a `from mod import fn`."""
    bound: dict[str, Path] = {}  # names cli.py binds to project modules, or to functions from one
    for node in _nodes(_tree(cli)):
        if isinstance(node, ast.ImportFrom):
            base = _from_base(cli, node)
            for alias in node.names:
                if target := module_file(f"{base}.{alias.name}") or module_file(base):
                    bound[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and (target := module_file(alias.name)):
                    bound[alias.asname] = target
    commands: dict[str, Path] = {}
    for node in _nodes(_tree(cli)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Call)
                and isinstance(node.func.func, ast.Attribute) and node.func.func.attr == "command"
                and node.func.args and isinstance(name := node.func.args[0], ast.Constant) and node.args):
            fn = node.args[0]
            holder = fn.value if isinstance(fn, ast.Attribute) else fn
            if isinstance(holder, ast.Name) and holder.id in bound:
                commands[str(name.value)] = bound[holder.id]
    return commands


def stage_closure(command: str) -> dict[Path, Path | None]:
    """Every project file `python -m pipelines.cli <command>` may run (see the module docstring), each
    mapped to a file that imports it (None for the entry points): `--why` prints the chain."""
    cli = module_file(CLI)
    if cli is None:
        raise SystemExit(f"{CLI} not found under {[str(r) for r in SOURCE_ROOTS]}")
    commands = mounted_commands(cli)
    if command not in commands:
        raise LookupError(f"command {command!r} is not mounted in {cli.relative_to(ROOT)} "
                          f"(found: {', '.join(sorted(commands)) or 'none'})")
    others = set(commands.values()) - {commands[command]}
    seen: dict[Path, Path | None] = dict.fromkeys([*with_parents(CLI), commands[command]])
    todo = list(seen)
    while todo:
        f = todo.pop(0)
        for g in sorted(imports_of(f) - others if f == cli else imports_of(f)):
            if g not in seen:
                seen[g] = f
                todo.append(g)
    return seen


def why(command: str, target: Path) -> str | None:
    """`a <- b <- pipelines/x.py`: how `command` reaches `target`, or None if it does not."""
    closure = stage_closure(command)
    chain = [target] if target in closure else []
    while chain and (up := closure[chain[-1]]) is not None:
        chain.append(up)
    return " <- ".join(f.relative_to(ROOT).as_posix() for f in chain) or None


def _py_files(d: Path) -> set[Path]:
    return {p for p in d.rglob("*.py") if "__pycache__" not in p.parts}


def collapse(closure: Iterable[Path]) -> list[str]:
    """Repo-relative deps, sorted: a directory stands for its files when all its .py files are in `closure`."""
    files, out = set(closure), set[Path]()
    for f in files:
        entry = f
        for d in f.parents:  # the highest package directory whose .py files are all in the closure
            if d in SOURCE_ROOTS or not d.is_relative_to(ROOT):
                break
            if _py_files(d) <= files:
                entry = d
        out.add(entry)
    return sorted(p.relative_to(ROOT).as_posix() for p in out)


def is_code_dep(entry: str) -> bool:
    """A dep this tool owns: a .py file or a directory inside a project package (even if gone since)."""
    if "${" in entry:
        return False
    p = PurePosixPath(entry.rstrip("/"))
    if p.suffix not in ("", ".py"):
        return False
    for root in SOURCE_ROOTS:
        prefix = root.relative_to(ROOT).parts
        if p.parts[:len(prefix)] == prefix and len(p.parts) > len(prefix):
            if (root / p.parts[len(prefix)] / "__init__.py").is_file():
                return True
    return False


@dataclass
class Stage:
    name: str
    command: str | None  # the pipelines.cli subcommand, None for other stages (left alone)
    deps: list[str] = field(default_factory=list)


def read_stages(text: str) -> list[Stage]:
    doc = yaml.safe_load(text) or {}
    stages = []
    for name, body in (doc.get("stages") or {}).items():
        body = body if isinstance(body, dict) else {}  # foreach/matrix stages: no plain cmd, left alone
        cmd = body.get("cmd", "")
        m = STAGE_CMD.match(" ".join(cmd) if isinstance(cmd, list) else str(cmd))
        deps = [next(iter(d)) if isinstance(d, dict) else str(d) for d in body.get("deps") or []]
        stages.append(Stage(name, m.group(1) if m else None, deps))
    return stages


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _entry(item_line: str) -> str:
    """`   - path  # note` -> path."""
    value = item_line.strip()[1:].strip()
    value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
    return value.strip("'\"")


def _skip(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def _deps_block(lines: list[str], stage: str) -> tuple[int, int]:
    """[start, end) of the lines of `stage`'s deps list items (block style only)."""
    top = next((i for i, line in enumerate(lines) if re.match(r"stages:\s*(#.*)?$", line)), None)
    if top is None:
        raise ValueError("no top-level `stages:` in dvc.yaml")
    body = [i for i in range(top + 1, len(lines)) if not _skip(lines[i])]
    end_of_stages = next((i for i in body if _indent(lines[i]) == 0), len(lines))
    indent = _indent(lines[body[0]]) if body else 0
    head = next((i for i in body if i < end_of_stages and _indent(lines[i]) == indent
                 and re.match(rf"\s*['\"]?{re.escape(stage)}['\"]?:(\s|$)", lines[i])), None)
    if head is None:
        raise ValueError(f"stage {stage!r} not found in dvc.yaml's text")
    own = [i for i in body if i > head]
    own = own[:next((k for k, i in enumerate(own) if _indent(lines[i]) <= indent), len(own))]
    key = next((i for i in own if re.match(r"\s+deps:\s*(#.*)?$", lines[i])), None)
    if key is None:
        raise ValueError(f"stage {stage!r} has no block-style `deps:` list to rewrite")
    start = end = key + 1
    item_indent = None
    for i in (i for i in own if i > key):
        line = lines[i]
        if line.lstrip().startswith("- ") and _indent(line) >= _indent(lines[key]) and (
                item_indent is None or _indent(line) == item_indent):
            item_indent = _indent(line)
        elif item_indent is None or _indent(line) <= item_indent:
            break  # the next key of the stage; deeper lines continue an item
        end = i + 1
    return start, end


def rewrite(text: str) -> str:
    """`text` (a dvc.yaml) with each pipelines.cli stage's code deps replaced by its import closure."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for stage in read_stages(text):
        if stage.command is None:
            continue
        start, end = _deps_block(lines, stage.name)
        items: list[tuple[list[str], list[str], str]] = []  # (comments above, its lines, entry)
        comments: list[str] = []
        for line in lines[start:end]:
            if line.lstrip().startswith("- ") and (not items or _indent(line) == _indent(items[0][1][0])):
                items.append((comments, [line], _entry(line)))
                comments = []
            elif _skip(line):
                comments.append(line)
            else:
                items[-1][1].append(line)
        indent = " " * (_indent(items[0][1][0]) if items else _indent(lines[start - 1]) + 2)
        block = [ln for above, own, e in items if not is_code_dep(e) for ln in above + own]
        old = {e: (above, own) for above, own, e in items if is_code_dep(e)}
        new = collapse(stage_closure(stage.command))
        block += [ln for e, (above, _) in old.items() if e not in new for ln in above]  # keep their comments
        for e in new:
            above, own = old.get(e, ([], [f"{indent}- {e}\n"]))
            block += above + own
        lines[start:end] = block
    out = "".join(lines)
    return out if text.endswith("\n") or not text else out.rstrip("\n")


@dataclass
class Drift:
    stage: str
    missing: list[str]  # needed by the imports, absent from dvc.yaml
    extra: list[str]  # in dvc.yaml, not needed
    problems: list[str]  # imports of the test suite

    def __str__(self) -> str:
        parts = [f"stage {self.stage}:"]
        parts += [f"  missing {m}" for m in self.missing] + [f"  extra   {e}" for e in self.extra]
        parts += [f"  {p}" for p in self.problems]
        if len(parts) == 1:
            parts.append("  code deps out of order (run `python -m tools.stage_deps --write`)")
        return "\n".join(parts)


def check(text: str) -> list[Drift]:
    """Per stage, how dvc.yaml's code deps differ from the generated ones (empty when none do)."""
    drifts = []
    new = {s.name: s for s in read_stages(rewrite(text))}
    for stage in read_stages(text):
        if stage.command is None:
            continue
        files = stage_closure(stage.command)
        problems = [f"imports the test suite: {f.relative_to(ROOT).as_posix()}" for f in sorted(files)
                    if f.is_relative_to(TESTS)]
        want, have = new[stage.name].deps, stage.deps
        if problems or want != have:
            drifts.append(Drift(stage.name, [d for d in want if d not in have], [d for d in have if d not in want],
                                problems))
    return drifts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.stage_deps", description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the code deps in place")
    ap.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml", help="default: this checkout's dvc.yaml")
    ap.add_argument("--why", metavar="FILE", help="print how each stage imports FILE (a repo-relative .py path)")
    args = ap.parse_args(argv)
    if args.why:
        for stage in read_stages(args.dvc_yaml.read_text()):
            if stage.command is not None:
                print(f"{stage.name}: {why(stage.command, (ROOT / args.why).resolve()) or 'not imported'}")
        return 0
    text = args.dvc_yaml.read_text()
    try:
        drifts = check(text)
    except (LookupError, ValueError) as e:  # a stage this tool cannot read: say which, no traceback
        print(f"error: {args.dvc_yaml}: {e}", file=sys.stderr)
        return 2
    for d in drifts:
        print(d)
    if args.write:
        args.dvc_yaml.write_text(rewrite(text))
        print(f"{args.dvc_yaml}: rewrote the code deps of {len(drifts)} stage(s)" if drifts
              else f"{args.dvc_yaml}: code deps already match the imports")
        return 1 if any(d.problems for d in drifts) else 0
    return 1 if drifts else 0


if __name__ == "__main__":
    sys.exit(main())
