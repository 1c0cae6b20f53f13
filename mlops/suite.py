"""The expectation suite of the data contract, built from the contract alone.

``build_suite`` turns the contract (and ``validate``'s settings) into a Great
Expectations suite; one stored suite serves every partition of a schema (with the target
column, or without it: rows to score whose outcome is not known yet), its per-partition
bounds given as suite parameters (``suite_parameters``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops import partitions
from mlops.config import Validate
from mlops.contract import Contract

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

START_PARAM = "partition_start"
# The column naming each row's partition when many partitions are validated in one run.
PARTITION_COLUMN = "__mlops_partition__"
END_PARAM = "partition_end"
KEY_MOSTLY_PARAM = "key_unique_mostly"

_INTS = [
    *(f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)),
    *(f"{s}Int{b}Dtype" for s in ("", "U") for b in (8, 16, 32, 64)),
]
_FLOATS = ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype"]
_BOOLS = ["bool", "BooleanDtype"]
# Object columns are checked value by value against ``str``; StringDtype columns by dtype.
_STRINGS = ["str", "StringDtype"]
# GX's type-list check cannot match a tz-aware dtype on pandas; ExpectColumnTypeToBe can.
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"


def _feature_types(dtype: str, nulls_allowed: bool) -> list[str]:
    if dtype == "float":
        return [*_FLOATS, *_INTS]
    if dtype == "int":
        # pandas stores an int column holding NaN as float64
        return [*_INTS, *_FLOATS] if nulls_allowed else list(_INTS)
    if dtype == "bool":
        return list(_BOOLS)
    return list(_STRINGS)


def build_suite(
    contract: Contract,
    cfg: Validate,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    name: str = "contract",
    batch_column: str | None = None,
    labelled: bool = True,
) -> gx.ExpectationSuite:
    """Derive the expectation suite from the data contract alone.

    Args:
        contract: The data contract.
        cfg: ``validate`` settings (duplicate-key allowance, extra expectations).
        interval: The partition's ``[start, end)``. Without it the timestamp bounds are the
            suite parameters ``partition_start``/``partition_end``, so one stored suite
            serves every partition (``suite_parameters`` gives their values, and that of
            ``key_unique_mostly``, used whenever ``cfg.max_duplicate_keys`` > 0).
        name: The suite name.
        batch_column: For a run over many partitions at once (``validate``): the column
            naming each row's partition. Keys are then checked for uniqueness within each
            partition (with the partition as part of the key, and no ``mostly``: every
            duplicated row is listed); the other expectations are the same, in the same
            order, and their per-partition results are derived from the rows they list.
        labelled: Whether the partitions have the target column. Without it the suite
            expects every contract column but the target and checks no target; with it
            the target's type and set or range are checked on its values, and nulls (rows
            whose outcome is not known yet) are allowed.

    Returns:
        An ExpectationSuite not yet attached to any Data Context.

    Raises:
        ValueError: An extra expectation is unknown or its kwargs are invalid.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    ts, target = contract.timestamp, contract.target
    columns = [c for c in contract.columns if labelled or c != target]
    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*columns, *([batch_column] if batch_column else [])],
            exact_match=True,
        ),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=contract.min_rows, max_value=contract.max_rows
        ),
    ]
    for key in contract.entity_keys:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=key))
    dup: dict[str, Any] = (
        {"mostly": {"$PARAMETER": KEY_MOSTLY_PARAM}} if cfg.max_duplicate_keys else {}
    )
    if batch_column is not None:
        exps.append(
            gxe.ExpectCompoundColumnsToBeUnique(column_list=[*contract.entity_keys, batch_column])
        )
    elif len(contract.entity_keys) == 1:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=contract.entity_keys[0], **dup))
    else:
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=contract.entity_keys, **dup))

    start: Any = {"$PARAMETER": START_PARAM}
    end: Any = {"$PARAMETER": END_PARAM}
    if interval is not None:
        start, end = interval
    exps += [
        gxe.ExpectColumnValuesToNotBeNull(column=ts),
        gxe.ExpectColumnTypeToBe(column=ts, type_=TIMESTAMP_DTYPE),
        gxe.ExpectColumnValuesToBeBetween(
            column=ts, min_value=start, max_value=end, strict_max=True
        ),
    ]

    for f in contract.features:
        exps.append(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=f.name, type_list=_feature_types(f.dtype, f.max_null_fraction > 0)
            )
        )
        if f.max_null_fraction < 1:
            exps.append(
                gxe.ExpectColumnValuesToNotBeNull(column=f.name, mostly=1.0 - f.max_null_fraction)
            )
        if f.min is not None or f.max is not None:
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max)
            )
        if f.categories:
            exps.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=f.name,
                    value_set=list(f.categories),
                    mostly=1.0 - f.unseen_category_tolerance,
                )
            )

    if labelled:
        exps += _target(contract)
    exps += [_extra(i, spec) for i, spec in enumerate(cfg.extra_expectations)]
    return gx.ExpectationSuite(name=name, expectations=exps)


def _target(contract: Contract) -> list[Any]:
    """The target's expectations; GX skips nulls in them, so unknown outcomes pass."""
    import great_expectations.expectations as gxe

    target = contract.target
    if contract.task == "classification":
        # A 0/1 column holding nulls is stored as float; the set check keeps it to 0/1.
        return [
            gxe.ExpectColumnValuesToBeInTypeList(
                column=target, type_list=[*_BOOLS, *_INTS, *_FLOATS]
            ),
            gxe.ExpectColumnValuesToBeInSet(column=target, value_set=[0, 1, True, False]),
        ]
    exps: list[Any] = [
        gxe.ExpectColumnValuesToBeInTypeList(column=target, type_list=[*_FLOATS, *_INTS])
    ]
    if contract.target_min is not None or contract.target_max is not None:
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=target, min_value=contract.target_min, max_value=contract.target_max
            )
        )
    return exps


def _extra(i: int, spec: dict[str, Any]) -> Any:
    """Turn ``{"type": "expect_...", "kwargs": {...}}`` into a GX expectation.

    The kwargs are the expectation's own fields, so ``severity``/``mostly`` go there too.
    """
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl

    where = f"validate.extra_expectations[{i}]"
    unknown = set(spec) - {"type", "kwargs"}
    if unknown or not isinstance(spec.get("type"), str):
        raise ValueError(
            f"{where}: expected {{'type': 'expect_...', 'kwargs': {{...}}}}, "
            f"got keys {sorted(spec)}"
        )
    try:
        cls = get_expectation_impl(spec["type"])
    except ExpectationNotFoundError:
        raise ValueError(
            f"{where}: unknown expectation type {spec['type']!r} (use a GX name such as "
            f"'expect_column_values_to_be_between')"
        ) from None
    try:
        return cls(**(spec.get("kwargs") or {}))
    except Exception as exc:  # noqa: BLE001 - any kwargs error is the config's; pydantic's names it
        raise ValueError(f"{where} ({spec['type']}): invalid kwargs: {exc}") from None


def suite_parameters(pid: str, rows: int, cfg: Validate) -> dict[str, Any]:
    """The per-partition values of the suite parameters ``build_suite`` leaves open.

    ``max_duplicate_keys`` counts rows whose key also appears on another row (as GX does:
    one key on two rows is 2), turned into a ``mostly`` for this partition's row count.
    """
    start, end = partitions.interval(pid)
    out: dict[str, Any] = {START_PARAM: start, END_PARAM: end}
    if cfg.max_duplicate_keys:
        # +0.5 keeps float rounding on the right side of the bound
        out[KEY_MOSTLY_PARAM] = max(0.0, 1.0 - (cfg.max_duplicate_keys + 0.5) / max(rows, 1))
    return out


def for_gx(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Undo storage-only differences GX's exact dtype checks would reject.

    A tz-aware timestamp in another unit (``us`` from Arrow writers) is viewed as ``ns``, and
    a pandas ``category`` column as its plain values, which GX then checks one by one. Only
    the frame handed to GX changes; the validated file is the raw file, byte for byte.
    """
    import pandas as pd

    changes: dict[str, Any] = {}
    ts = df.get(contract.timestamp)
    tz_aware = isinstance(ts, pd.Series) and isinstance(ts.dtype, pd.DatetimeTZDtype)
    if tz_aware and ts.dtype.unit != "ns":
        changes[contract.timestamp] = ts.dt.as_unit("ns")
    for col in df.columns:
        if isinstance(df[col], pd.Series) and isinstance(df[col].dtype, pd.CategoricalDtype):
            changes[col] = df[col].astype(object)
    return df.assign(**changes) if changes else df
