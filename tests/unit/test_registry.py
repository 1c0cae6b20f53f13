"""registry: the pure helpers of the registry handle."""

from __future__ import annotations

import pytest

from mlops import registry, tags


def test_version_ranges_read_like_a_person_would_write_them() -> None:
    assert registry._ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"


def test_a_versions_threshold_is_its_tag_and_0_5_without_one() -> None:
    # given the tags of a version trained with a threshold, and of one trained before
    assert registry.version_threshold({tags.THRESHOLD: "0.2317"}, "flights", "3") == 0.2317
    assert registry.version_threshold({}, "flights", "2") == 0.5
    # given a tag edited by hand to something that is not a threshold, then it is refused
    # naming the version, the tag and what to do
    for bad in ("high", "1.5", "nan"):
        with pytest.raises(registry.RegistryError) as err:
            registry.version_threshold({tags.THRESHOLD: bad}, "flights", "4")
        msg = str(err.value)
        assert msg.startswith("flights v4: tag mlops.threshold=") and "delete it" in msg


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:////srv/proj/mlflow.db", "/srv/proj/mlflow.db"),
        ("sqlite:///mlflow.db", "mlflow.db"),
        ("sqlite:////srv/m.db?timeout=30", "/srv/m.db"),
        ("postgresql://mlflow@db/mlflow", None),
        ("http://mlflow:5000", None),
    ],
)
def test_sqlite_path_names_the_database_file_of_sqlite_uris_only(uri: str, path: str) -> None:
    got = registry.sqlite_path(uri)
    assert (None if got is None else str(got)) == path
