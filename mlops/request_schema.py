"""What a prediction request may hold, generated from the data contract.

A row carries every entity key, optionally the contract timestamp, and optionally any
feature; features left out are read from the online store. Types, ranges, category sets
and nullability are the contract's, checked strictly: ``"12"`` is not an int, an unknown
field is refused. Every error names the field, the contract rule and what was sent, so
the server answers 422, never 500. The Open Inference Protocol v2 carries the same rows
as named columns (:func:`v2_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from mlops.contract import Contract, Feature

KeyType = Literal["string", "int"]
V2_TYPES = {"float": "FP64", "int": "INT64", "category": "BYTES", "bool": "BOOL"}
BODY_RULE = 'request: one row object or {"rows": [row, ...]}, as JSON'
V2_RULE = "v2: 'inputs' is a list of {name, datatype, shape, data}, one value per row each"


class RequestError(ValueError):
    """A request that does not fit the contract: one entry per field at fault."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        """Keep the errors; the message is the first one, for logs."""
        self.errors = errors
        first = errors[0] if errors else {}
        super().__init__(f"{first.get('field', '?')}: {first.get('msg', 'invalid request')}")


def rule(f: Feature) -> str:
    """The contract rule of one feature, as errors quote it."""
    parts: list[str] = [f.dtype]
    if f.categories:
        parts.append(f"one of {', '.join(f.categories)}")
    if f.min is not None:
        parts.append(f">= {f.min:g}")
    if f.max is not None:
        parts.append(f"<= {f.max:g}")
    parts.append("nullable" if nullable(f) else "not null")
    return "contract: " + ", ".join(parts)


def nullable(f: Feature) -> bool:
    """A feature the contract allows to be missing (``max_null_fraction`` above 0)."""
    return f.max_null_fraction > 0


def _annotation(f: Feature) -> Any:
    base: Any = {"float": float, "int": int, "bool": bool, "category": str}[f.dtype]
    if f.categories:
        base = Literal[tuple(f.categories)]
    return base | None if nullable(f) else base


@dataclass(frozen=True)
class Schema:
    """The request schema of one contract: a strict row model and its limits."""

    contract: Contract
    key_types: dict[str, KeyType]
    max_rows: int
    row: type[BaseModel]
    rows: TypeAdapter[list[Any]]
    rules: dict[str, str]

    @classmethod
    def build(cls, contract: Contract, key_types: dict[str, KeyType], max_rows: int) -> Schema:
        """Generate the row model from the contract (keys required, features optional)."""
        fields: dict[str, Any] = {}
        rules: dict[str, str] = {}
        for k in contract.entity_keys:
            typ = str if key_types.get(k, "string") == "string" else int
            fields[k] = (typ, ...)
            rules[k] = f"entity key: {typ.__name__}, required"
        fields[contract.timestamp] = (datetime | None, Field(None, strict=False))
        rules[contract.timestamp] = "timestamp: ISO 8601, optional (default: now)"
        for f in contract.features:
            ge = f.min if f.dtype in ("float", "int") else None
            le = f.max if f.dtype in ("float", "int") else None
            fields[f.name] = (_annotation(f), Field(None, ge=ge, le=le))
            rules[f.name] = rule(f)
        row = create_model("Row", __config__=ConfigDict(extra="forbid", strict=True), **fields)
        adapter = TypeAdapter(list[row])
        return cls(contract, key_types, max_rows, row, adapter, rules)

    def parse(self, body: Any) -> list[Row]:
        """Rows of a request body: one row object, or ``{"rows": [...]}``.

        Raises:
            RequestError: the body, a row or a field does not fit the contract.
        """
        if isinstance(body, dict) and "rows" in body:
            if set(body) != {"rows"}:
                extra = sorted(set(body) - {"rows"})
                raise RequestError(
                    [
                        _error(
                            ["body", extra[0]], "unknown field next to rows", kind="extra_forbidden"
                        )
                    ]
                )
            return self.parse_rows(body["rows"], ["rows"])
        if not isinstance(body, dict):
            raise RequestError(
                [
                    _error(
                        ["body"],
                        'expected one row object or {"rows": [row, ...]}',
                        kind="model_type",
                    )
                ]
            )
        return self.parse_rows([body], [], single=True)

    def parse_rows(self, raw: Any, prefix: list[Any], single: bool = False) -> list[Row]:
        """Validate a list of row objects; errors are located under ``prefix``."""
        if not isinstance(raw, list) or not raw:
            kind = "too_short" if isinstance(raw, list) else "list_type"
            raise RequestError(
                [_error([*prefix], "expected a non-empty list of row objects", kind=kind)]
            )
        if len(raw) > self.max_rows:
            raise RequestError(
                [
                    _error(
                        [*prefix],
                        f"{len(raw):,} rows; at most {self.max_rows:,} per request "
                        "(serve.max_batch_rows)",
                        rule=f"serve.max_batch_rows: at most {self.max_rows:,} rows",
                        kind="too_long",
                    )
                ]
            )
        try:
            models = self.rows.validate_python(raw)
        except ValidationError as exc:
            raise RequestError(self._errors(exc, prefix, single)) from None
        return [Row(m.__dict__, m.model_fields_set) for m in models]

    def _errors(
        self, exc: ValidationError, prefix: list[Any], single: bool
    ) -> list[dict[str, Any]]:
        out = []
        for e in exc.errors(include_url=False):
            loc = list(e["loc"])
            if single and loc and isinstance(loc[0], int):
                loc = loc[1:]
            field = next((x for x in reversed(loc) if isinstance(x, str)), None)
            # Literal and union errors add the member type to loc: keep the field's own.
            while loc and loc[-1] != field:
                loc.pop()
            msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
            if e["type"] == "missing":
                msg = "required field missing"
            entry = _error([*prefix, *loc], msg, field)
            entry["rule"] = self.rules.get(field, "not in the contract") if field else BODY_RULE
            entry["type"] = e["type"]
            if e["type"] != "missing":
                entry["input"] = _jsonable(e.get("input"))
            out.append(entry)
        return out

    def v2_rows(self, body: Any) -> tuple[list[Row], str | None]:
        """Rows of an Open Inference Protocol v2 request, and its ``id``.

        Each input is one named column (a key, the timestamp or a feature) of the same
        length; shapes ``[N]`` and ``[N, 1]`` are accepted.
        """
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise RequestError(
                [_error(["inputs"], "a v2 request needs an 'inputs' list", rule=V2_RULE)]
            )
        columns: dict[str, list[Any]] = {}
        for i, spec in enumerate(body["inputs"]):
            name = spec.get("name") if isinstance(spec, dict) else None
            data = spec.get("data") if isinstance(spec, dict) else None
            if not isinstance(name, str) or not isinstance(data, list):
                raise RequestError(
                    [
                        _error(
                            ["inputs", i],
                            "each input needs a 'name' and a 'data' list",
                            rule=V2_RULE,
                            kind="model_type",
                        )
                    ]
                )
            columns[name] = [x[0] if isinstance(x, list) and len(x) == 1 else x for x in data]
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            sizes = ", ".join(f"{k}={len(v)}" for k, v in columns.items())
            raise RequestError(
                [_error(["inputs"], f"inputs differ in length ({sizes})", rule=V2_RULE)]
            )
        n = lengths.pop()
        raw = [{k: v[j] for k, v in columns.items()} for j in range(n)]
        rows = self.parse_rows(raw, ["inputs"])
        rid = body.get("id")
        return rows, None if rid is None else str(rid)

    def v2_metadata(self, name: str, versions: list[str]) -> dict[str, Any]:
        """The v2 model metadata: inputs are the keys and features, outputs the prediction."""
        c = self.contract
        inputs: list[dict[str, Any]] = [
            {"name": k, "datatype": "BYTES" if self.key_types.get(k) != "int" else "INT64"}
            for k in c.entity_keys
        ] + [{"name": f.name, "datatype": V2_TYPES[f.dtype]} for f in c.features]
        outputs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        if c.task == "classification":
            outputs.append({"name": "predicted_label", "datatype": "INT64", "shape": [-1]})
        for spec in inputs:
            spec["shape"] = [-1]
        return {
            "name": name,
            "versions": versions,
            "platform": "mlops",
            "inputs": inputs,
            "outputs": outputs,
        }


@dataclass(frozen=True)
class Row:
    """One validated row: its values, and the fields the client actually sent."""

    values: dict[str, Any]
    given: set[str]


def _error(
    loc: list[Any],
    msg: str,
    field: str | None = None,
    rule: str = BODY_RULE,
    kind: str = "value_error",
) -> dict[str, Any]:
    """One error entry; every entry has the same keys (``input`` where one was sent)."""
    name = (
        field if field is not None else next((x for x in reversed(loc) if isinstance(x, str)), "")
    )
    return {"loc": loc, "field": name, "msg": msg, "rule": rule, "type": kind}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
