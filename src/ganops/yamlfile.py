"""YAML read strictly: what plain `yaml.safe_load` lets through silently is an error naming the line."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode

from ganops.errors import ConfigError

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


class _BadKey(yaml.YAMLError):
    """A mapping key the strict loader refuses; its message is already one line for the user."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what YAML lets through silently: a key written twice (YAML keeps the second
    without a word) and a key that is not a string (`1:`, `null:`, `on:` which YAML 1.1 reads as true)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *anchor` merges; its keys may be overridden on purpose
                continue
            line = key_node.start_mark.line + 1
            if key_node.tag != _STR:
                start, end = key_node.start_mark, key_node.end_mark
                shown = start.buffer[start.index:end.index] if start.buffer else key_node.id
                raise _BadKey(f"key {shown} on line {line} is not a string (quote it, or fix the indent)")
            if key_node.value in first:
                raise _BadKey(f"key {key_node.value!r} on line {line} is written twice "
                              f"(first on line {first[key_node.value]})")
            first[key_node.value] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text → Python, through the strict loader; ConfigError naming `where` and the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _BadKey as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.MarkedYAMLError as e:
        line = f" on line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"{where}: not valid YAML ({e.problem}{line})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML (nested too deeply)") from None
    except (ValueError, OverflowError) as e:  # a constructor's: 2001-02-30, an int of 5000 digits
        raise ConfigError(f"{where}: not valid YAML ({str(e).split(';')[0]})") from None
