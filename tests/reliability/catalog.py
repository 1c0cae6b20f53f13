"""The README table "What happens when things go wrong", built from the reliability tests.

Every test in ``tests/reliability/test_*.py`` states its case in its docstring::

    Case: what goes wrong.
    Behaviour: what the pipeline does about it.

A parametrised test says ``Cases: NAME`` instead, NAME being a module-level list of
objects with ``id``, ``case`` and ``behaviour`` (one row each). A test of the suite's own
tools says ``Self-check: ...`` and gets no row. Each module names its
area in ``AREA``. ``python -m tests.reliability.catalog`` prints the README section;
``test_catalog.py`` checks README.md holds exactly that, so the two cannot drift.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
START = "<!-- reliability:start -->"
END = "<!-- reliability:end -->"
# Table order; a new module must be added here (test_catalog checks none is missing).
MODULES = [
    "test_bad_input",
    "test_config",
    "test_kill",
    "test_random_kill",
    "test_services",
    "test_concurrency",
    "test_disk_full",
    "test_security",
    "test_state_files",
    "test_versions",
    "test_registry",
    "test_runs",
    "test_ownership",
    "test_labels",
]


@dataclass(frozen=True)
class Row:
    area: str
    case: str
    behaviour: str
    test: str


def _field(doc: str, name: str) -> str | None:
    """The text after ``Name:`` up to the next field or blank line, joined on one line."""
    m = re.search(rf"^\s*{name}:\s*(.+?)(?=^\s*\w+:|\n\s*\n|\Z)", doc, re.M | re.S)
    return " ".join(m.group(1).split()).rstrip(".") if m else None


def tests_of(module: str) -> list[tuple[str, object]]:
    mod = importlib.import_module(f"tests.reliability.{module}")
    return [
        (name, fn)
        for name, fn in vars(mod).items()
        if name.startswith("test_") and inspect.isfunction(fn)
    ]


def rows() -> list[Row]:
    """One row per documented case, in MODULES order then source order."""
    out: list[Row] = []
    for module in MODULES:
        mod = importlib.import_module(f"tests.reliability.{module}")
        area = mod.AREA
        for name, fn in sorted(tests_of(module), key=lambda t: t[1].__code__.co_firstlineno):  # type: ignore[attr-defined]
            doc = inspect.getdoc(fn) or ""
            listed = _field(doc, "Cases")
            if listed:
                for c in getattr(mod, listed):
                    out.append(Row(area, c.case, c.behaviour, f"{module}.py::{name}[{c.id}]"))
                continue
            case, behaviour = _field(doc, "Case"), _field(doc, "Behaviour")
            if case and behaviour:
                out.append(Row(area, case, behaviour, f"{module}.py::{name}"))
    return out


def undocumented() -> list[str]:
    """Tests that state no case (each reliability test must)."""
    missing = []
    for module in MODULES:
        for name, fn in tests_of(module):
            doc = inspect.getdoc(fn) or ""
            if _field(doc, "Self-check"):
                continue  # checks the suite's own scanners, not a behaviour of the pipeline
            if not _field(doc, "Cases") and not (_field(doc, "Case") and _field(doc, "Behaviour")):
                missing.append(f"{module}.py::{name}")
    return missing


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    lines = ["| Area | What goes wrong | What happens | Test |", "|---|---|---|---|"]
    for r in rows():
        lines.append(f"| {_cell(r.area)} | {_cell(r.case)} | {_cell(r.behaviour)} | `{r.test}` |")
    return "\n".join(lines)


def section() -> str:
    """The block README.md must hold between the markers (markers included)."""
    return f"{START}\n{table()}\n{END}"


def in_readme(text: str) -> str | None:
    """The marked block as it stands in ``text``, or None without markers."""
    m = re.search(re.escape(START) + r".*?" + re.escape(END), text, re.S)
    return m.group(0) if m else None


if __name__ == "__main__":
    print(section())
