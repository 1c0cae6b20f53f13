"""The Great Expectations file context in ``great_expectations/``.

Opened once per run, with the suite, validation definition and checkpoint kept under
stable names: one set for partitions with the target column, one (``..._unlabelled``)
for partitions ingested without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops import io
from mlops.config import Params
from mlops.suite import build_suite

KEEP_VALIDATIONS = 10
DOCS_INDEX = Path("uncommitted/data_docs/local_site/index.html")


def _names(project: str, labelled: bool = True) -> dict[str, str]:
    tail = "" if labelled else "_unlabelled"
    return {
        "datasource": f"{project}_pandas",
        "asset": "raw_partition",
        "batch": "whole_partition",
        "suite": f"{project}_contract{tail}",
        "validation": f"{project}_raw_partition{tail}",
        "checkpoint": f"{project}_validate{tail}",
    }


def get_context(gx_root: Path) -> Any:
    """Open the GX file context rooted at ``gx_root``, creating it on first use.

    Analytics and progress bars are switched off and saved in ``great_expectations.yml``
    (only written when they change).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", context_root_dir=str(gx_root))
    changed = False
    bars = ctx.variables.progress_bars  # a dict once read back from the yml
    globally = bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)
    if globally is not False:
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        changed = True
    if ctx.config.analytics_enabled is not False:
        ctx.config.analytics_enabled = False
        changed = True
    if changed:
        ctx.variables.save()
    return ctx


def _keep_ids(ctx: Any, suite: Any) -> Any:
    """Give unchanged expectations their stored ids, so a re-run rewrites the suite identically.

    GX's own ``add_or_update`` compares expectations including their id, so a freshly built
    suite would get new ids on every run and the committed suite file would churn.
    """
    from great_expectations.exceptions import DataContextError

    try:
        stored = ctx.suites.get(suite.name)
    except DataContextError:
        return suite

    def key(e: Any) -> tuple[str, dict[str, Any]]:
        d = e.dict(exclude={"id", "rendered_content"})
        d["meta"], d["notes"] = d.get("meta") or None, d.get("notes") or None  # {} == None
        return e.expectation_type, d  # compared with ==, so a stored 1 matches a built 1.0

    pool = [(key(e), e.id) for e in stored.expectations]
    for e in suite.expectations:
        k = key(e)
        match = next((i for i, (sk, _) in enumerate(pool) if sk == k), None)
        e.id = pool.pop(match)[1] if match is not None else None
    return suite


def ensure_checkpoint(ctx: Any, params: Params, labelled: bool = True) -> Any:
    """Create or update the suite, validation definition and checkpoint under stable names.

    Names derive from ``params.project`` (``<project>_contract``, ``<project>_validate``...),
    so re-running updates the same definitions instead of adding new ones. Without
    ``labelled`` they are those of partitions lacking the target column
    (``<project>_contract_unlabelled``...).
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    n = _names(params.project, labelled)
    try:
        ds = ctx.data_sources.get(n["datasource"])
    except KeyError:
        ds = ctx.data_sources.add_pandas(n["datasource"])
    try:
        asset = ds.get_asset(n["asset"])
    except LookupError:
        asset = ds.add_dataframe_asset(n["asset"])
    try:
        batch = asset.get_batch_definition(n["batch"])
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(n["batch"])

    built = build_suite(params.contract, params.validate_cfg, name=n["suite"], labelled=labelled)
    suite = _keep_ids(ctx, built)
    suite = ctx.suites.add_or_update(suite)
    vd = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=n["validation"], data=batch, suite=suite)
    )
    actions: list[Any] = (
        [UpdateDataDocsAction(name="update_data_docs")]
        if params.validate_cfg.build_data_docs
        else []
    )
    return ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=n["checkpoint"],
            validation_definitions=[vd],
            actions=actions,
            result_format="BASIC",
        )
    )


def store_result(checkpoint: Any, vr: Any, validator: Any, name: str) -> Any:
    """Keep a run (of one partition or many) in GX's result store, without its row lists.

    Stored as ``checkpoint``'s own runs are, so Data Docs show it under its suite.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    for r in vr.results:
        for k in ("unexpected_list", "unexpected_index_list", "unexpected_index_query"):
            (r.result or {}).pop(k, None)
    vd = checkpoint.validation_definitions[0]
    suite_id = ExpectationSuiteIdentifier(name=vd.suite.name)
    run_id = RunIdentifier(run_name=name, run_time=datetime.now(UTC))
    # The meta GX's own ValidationDefinition.run records.
    vr.meta.update(
        validation_id=vd.id,
        checkpoint_id=checkpoint.id,
        run_id=run_id,
        validation_time=run_id.run_time,
        batch_parameters={"dataframe": "<DATAFRAME>"},
    )
    key = ValidationResultIdentifier(
        expectation_suite_identifier=suite_id,
        run_id=run_id,
        batch_identifier=validator.active_batch_id,
    )
    vd._validation_results_store.store_validation_results(
        suite_validation_result=vr,
        suite_validation_result_identifier=key,
        expectation_suite_identifier=suite_id,
    )
    return key


def prune_validations(gx_root: Path, keep: int = KEEP_VALIDATIONS) -> int:
    """Delete all but the newest ``keep`` stored validation results and their docs pages."""
    root = gx_root / "uncommitted" / "validations"
    if not root.is_dir():
        return 0
    files = sorted(root.rglob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    site = gx_root / "uncommitted" / "data_docs" / "local_site" / "validations"
    for old in files[keep:]:
        old.unlink(missing_ok=True)
        (site / old.relative_to(root)).with_suffix(".html").unlink(missing_ok=True)
    for base in (root, site):
        if base.is_dir():
            for d in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True):
                if not any(d.iterdir()):
                    d.rmdir()
    return max(0, len(files) - keep)


@contextmanager
def locked(gx_root: Path) -> Iterator[None]:
    """Serialise GX work across processes: GX rewrites its config and docs non-atomically."""
    with io.file_lock(gx_root / "uncommitted" / ".validate.lock"):
        yield
