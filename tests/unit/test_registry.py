"""registry: the pure helpers of the registry handle."""

from __future__ import annotations

from mlops import registry


def test_version_ranges_read_like_a_person_would_write_them() -> None:
    assert registry._ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
