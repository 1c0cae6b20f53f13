"""Where rows and their outcomes come from: the ``source`` and ``labels`` groups.

``source`` describes the table the partitions are cut from; ``labels`` where the
outcomes of scored rows arrive from once they are known (``mlops label``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlops.contract import Strict


class Join(Strict):
    """A lookup table joined onto the source rows (left join)."""

    path: str
    keys: list[str] = Field(min_length=1, description="Join keys (present on both sides).")
    columns: list[str] = Field(min_length=1, description="Columns kept, after renaming.")
    rename: dict[str, str] = Field(default_factory=dict)
    parse_dates: list[str] = Field(default_factory=list)


class Derived(Strict):
    """A column computed from others: an expression, a concatenated key or a row hash.

    ``hash`` makes a stable row key for a table without a natural one: a hash of the
    named columns' values, or with ``hash: row`` of every column the source file has
    (the timestamp included), in name order. The same row gets the same key in every run
    and whatever the order of rows or columns in the file.
    """

    name: str
    expr: str | None = Field(None, description="A pandas.eval expression.")
    concat: list[str] | None = None
    hash: list[str] | Literal["row"] | None = None
    sep: str = "-"

    @model_validator(mode="after")
    def _one_of(self) -> Derived:
        given = [k for k in ("expr", "concat", "hash") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"derive {self.name!r}: give exactly one of 'expr', 'concat' or 'hash'"
            )
        if isinstance(self.hash, list) and not self.hash:
            raise ValueError(f"derive {self.name!r}: 'hash' names no column (or use 'row')")
        return self


class Source(Strict):
    """A tabular source: a CSV or Parquet file or folder with a timestamp column."""

    path: str = Field(description="File or folder; 'pkg://package/rel/path' reads package data.")
    format: Literal["csv", "parquet"] = "csv"
    timestamp_column: str
    timestamp_format: str | None = None
    timezone: str = Field("UTC", description="Zone of naive timestamps in the source.")
    joins: list[Join] = Field(default_factory=list)
    derive: list[Derived] = Field(default_factory=list)
    dropna: list[str] = Field(default_factory=list, description="Rows without these are dropped.")
    rename: dict[str, str] = Field(default_factory=dict)


class Labels(Strict):
    """Where outcomes of scored rows come from, and when a scored partition is labelled.

    Without ``path`` the source is read again (a table whose recent rows gain their
    outcome later); with it, a CSV or Parquet file or folder of outcome rows keyed by the
    contract's entity keys, optionally with the time each outcome became known.
    """

    path: str | None = Field(
        None, description="File or folder of outcomes keyed by the entity keys; none: the source."
    )
    column: str | None = Field(
        None, description="Column holding the outcome in that file; default: contract.target."
    )
    known_at: str | None = Field(
        None,
        description="Column of when each outcome became known; `label --as-of T` then joins "
        "only the outcomes known by T.",
    )
    delay: int = Field(
        1,
        ge=0,
        description="Partitions between scoring a partition and labelling it: the scoring run "
        "of partition P labels P minus delay.",
    )
    withhold: bool = Field(
        False,
        description="Replay of historical data: partitions after train.partitions are ingested "
        "without the target, which arrives through `label` instead.",
    )
