"""Configuration cases: the project's ``params.yaml`` plus an override, written on demand.

``invalid.yaml`` lists cases that each break ``params.yaml`` in one place and name the
error ``load_params`` must report; ``valid.yaml`` lists overrides that must still load.
The base is read at test time, so the cases follow ``params.yaml`` as it changes.

An override is ``set: {dotted.path: value}`` and/or ``delete: [dotted.path]``. A path
addresses mapping keys and list items by index (``train.candidates.0.kind``,
``contract.features.3.dtype``); a final ``-`` appends to a list (``contract.features.-``).
Every step but the last must exist in the base, so a typo fails loudly instead of
silently testing something else; ``set`` may add a new last key (that is how unknown keys
are made).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BASE = REPO / "params.yaml"
INVALID = HERE / "invalid.yaml"
VALID = HERE / "valid.yaml"

_FIELDS = {"name", "set", "delete", "error"}


def _parts(path: str) -> list[str]:
    parts = str(path).split(".")
    if not all(parts):
        raise KeyError(f"{path!r}: empty path segment")
    return parts


def _index(node: list[Any], part: str, path: str, *, append: bool = False) -> int:
    if append and part == "-":
        return len(node)
    if not part.isdigit() or int(part) >= len(node):
        raise KeyError(f"{path}: no item {part!r} in a list of {len(node)}")
    return int(part)


def _step(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise KeyError(f"{path}: no key {part!r} (has {sorted(map(str, node))})")
        return node[part]
    if isinstance(node, list):
        return node[_index(node, part, path)]
    raise KeyError(f"{path}: {part!r} steps into a {type(node).__name__}, not a mapping or list")


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    *head, last = _parts(path)
    node = doc
    for part in head:
        node = _step(node, part, path)
    if not isinstance(node, dict | list):
        raise KeyError(f"{path}: {last!r} steps into a {type(node).__name__}")
    return node, last


def get_path(doc: Any, path: str) -> Any:
    """The value at a dotted path (KeyError if any step is missing)."""
    node = doc
    for part in _parts(path):
        node = _step(node, part, path)
    return node


def set_path(doc: Any, path: str, value: Any) -> None:
    """Set the value at a dotted path, in place (a final ``-`` appends to a list)."""
    node, last = _parent(doc, path)
    if isinstance(node, dict):
        node[last] = value
        return
    i = _index(node, last, path, append=True)
    if i == len(node):
        node.append(value)
    else:
        node[i] = value


def delete_path(doc: Any, path: str) -> None:
    """Remove the key or list item at a dotted path, in place (KeyError if absent)."""
    node, last = _parent(doc, path)
    if isinstance(node, dict):
        if last not in node:
            raise KeyError(f"{path}: no key {last!r} to delete")
        del node[last]
    else:
        del node[_index(node, last, path)]


@dataclass(frozen=True)
class Case:
    """One configuration: the base with ``set`` and ``delete`` applied."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    error: str | None = None

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``doc`` with this case's override applied."""
        out = copy.deepcopy(doc)
        for path, value in self.set.items():
            set_path(out, path, value)
        for path in self.delete:
            delete_path(out, path)
        return out

    def write(self, folder: Path, base: Path = BASE, filename: str = "params.yaml") -> Path:
        """Write the case as ``folder/filename`` and return its path."""
        doc = self.apply(yaml.safe_load(base.read_text()))
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        if yaml.safe_load(text) != doc:
            raise ValueError(f"case {self.name}: does not survive a YAML round trip")
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / filename
        header = f"# case {self.name}: {base.name} + set {self.set} delete {list(self.delete)}\n"
        if self.error:
            header += f"# expect-error: {self.error}\n"
        out.write_text(header + text)
        return out


def load_cases(path: Path, *, invalid: bool) -> list[Case]:
    """Read and check a case list; invalid cases need an ``error`` and a one-key override."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty list of cases")
    cases: list[Case] = []
    for i, item in enumerate(raw):
        where = f"{path.name}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"{where}: a case is a mapping with a 'name'")
        where = f"{path.name}:{item['name']}"
        if unknown := set(item) - _FIELDS:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        sets, deletes = item.get("set") or {}, item.get("delete") or []
        if not isinstance(sets, dict) or not isinstance(deletes, list):
            raise ValueError(f"{where}: 'set' is a mapping and 'delete' a list")
        error = item.get("error")
        if invalid:
            if not isinstance(error, str) or not error.strip():
                raise ValueError(f"{where}: an invalid case names its 'error'")
            if len(sets) + len(deletes) != 1:
                raise ValueError(f"{where}: an invalid case overrides exactly one key")
        elif error is not None:
            raise ValueError(f"{where}: a valid case has no 'error'")
        if not sets and not deletes:
            raise ValueError(f"{where}: no override")
        cases.append(Case(item["name"], dict(sets), tuple(deletes), error))
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: case names must be unique")
    return cases


def invalid_cases() -> list[Case]:
    """The cases of ``invalid.yaml``: each must fail with its ``error``."""
    return load_cases(INVALID, invalid=True)


def valid_cases() -> list[Case]:
    """The cases of ``valid.yaml``: each must load."""
    return load_cases(VALID, invalid=False)


def case(name: str) -> Case:
    """The invalid case called ``name``."""
    for c in invalid_cases():
        if c.name == name:
            return c
    raise KeyError(f"no case {name!r} in {INVALID}")
