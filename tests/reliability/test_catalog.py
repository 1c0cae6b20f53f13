"""The README's "What happens when things go wrong" table is generated from these tests."""

from __future__ import annotations

from pathlib import Path

from tests.reliability import catalog

HERE = Path(__file__).resolve().parent


def test_every_reliability_module_is_catalogued() -> None:
    # given the test modules on disk, then each is in the catalog's order
    on_disk = {p.stem for p in HERE.glob("test_*.py")} - {"test_catalog"}
    assert on_disk == set(catalog.MODULES)


def test_every_reliability_test_states_its_case() -> None:
    # every test says what goes wrong and what happens, so the table is complete
    assert catalog.undocumented() == []
    assert len(catalog.rows()) >= 30


def test_readme_section_matches_the_tests() -> None:
    # given the README, then it holds exactly the generated table between the markers
    readme = catalog.README.read_text()
    found = catalog.in_readme(readme)
    assert found is not None, (
        f"README.md lacks {catalog.START} ... {catalog.END}; paste the output of "
        "`python -m tests.reliability.catalog`"
    )
    assert found == catalog.section(), (
        "README.md is out of date; replace its reliability section with the output of "
        "`python -m tests.reliability.catalog`"
    )
