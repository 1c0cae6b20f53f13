"""The Great Expectations file context in ``great_expectations/``.

Opened once per run, with the suite, validation definition and checkpoint kept under
stable names: one set for partitions with the target column, one (``..._unlabelled``)
for partitions ingested without it.

Data Docs open without a network (``OfflineSiteBuilder``): pages load jQuery and
Bootstrap from the site's ``static/vendor/`` (copies of ``data_docs_assets/``) by
relative path, draw their tables in HTML, and load nothing from another host. Stored
results are pruned to the newest few, besides those registered versions depend on.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import gx_results, io, tags
from mlops.config import Params, Settings
from mlops.suite import build_suite

log = logging.getLogger(__name__)
KEEP_VALIDATIONS = 10
SITE = "local_site"
SITE_DIR = Path("uncommitted/data_docs") / SITE
DOCS_INDEX = SITE_DIR / "index.html"
ASSETS = Path(__file__).with_name("data_docs_assets")
VENDOR = "static/vendor"
# How the Data Docs site is built (merged into its entry in great_expectations.yml).
OFFLINE_SITE = {
    "class_name": "OfflineSiteBuilder",
    "module_name": __name__,
    "show_how_to_buttons": False,
}
NO_CHART = "Chart left out: these pages load no chart library (the values are in the result)."
# Font Awesome's icons as GX uses them, drawn as characters instead of from its web font.
ICONS = """<style>.fas, .far, .fa { font-style: normal; font-weight: bold; }
.fa-check-circle::before { content: "\\2714"; } .fa-times::before { content: "\\2716"; }
.fa-exclamation-triangle::before { content: "\\26A0"; } .fa-comment::before { content: "\\270E"; }
.fa-question-circle::before { content: "?"; }</style>
"""
_TAG = re.compile(r"<(script|link|img)\b[^>]*>(?:\s*</script>)?", re.IGNORECASE)
_URL = re.compile(r'\b(src|href)="([^"]*)"', re.IGNORECASE)
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_PINNED = re.compile(r'\s(?:integrity|crossorigin)="[^"]*"', re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*(['\"]?)(?:[a-z]+:)?//[^)]*?\1\s*\)", re.IGNORECASE)


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

    Analytics and progress bars are switched off, and the ``local_site`` Data Docs are
    built by ``OfflineSiteBuilder``; all saved in ``great_expectations.yml`` (only
    written when they change).
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
    sites = dict(ctx.variables.data_docs_sites or {})
    site = dict(sites.get(SITE) or {})
    if {k: site.get(k) for k in OFFLINE_SITE} != OFFLINE_SITE:
        backend = {"class_name": "TupleFilesystemStoreBackend", "base_directory": f"{SITE_DIR}/"}
        site.setdefault("store_backend", backend)
        sites[SITE] = {**site, **OFFLINE_SITE}
        ctx.variables.data_docs_sites = sites
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


def prune_validations(
    gx_root: Path,
    keep: int = KEEP_VALIDATIONS,
    needed: Collection[str] | Callable[[], Collection[str]] = (),
) -> int:
    """Delete stored validation results and their docs pages, but those ``retained``.

    Kept are the ``needed`` results (their paths under ``uncommitted/validations/``
    without ``.json``, as ``needed_validations`` gives them; a function giving them is
    called only when there is something to delete) and the newest ``keep`` others.

    Returns:
        How many results were deleted.
    """
    root = gx_root / "uncommitted" / "validations"
    if not root.is_dir():
        return 0
    files = {p.relative_to(root).with_suffix("").as_posix(): p for p in root.rglob("*.json")}
    if len(files) <= keep:
        return 0
    stored = {key: p.stat().st_mtime for key, p in files.items()}
    kept = gx_results.retained(stored, needed() if callable(needed) else needed, keep)
    site = gx_root / SITE_DIR / "validations"
    for key in sorted(files.keys() - kept):
        files[key].unlink(missing_ok=True)
        (site / f"{key}.html").unlink(missing_ok=True)
    for base in (root, site):
        if base.is_dir():
            for d in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True):
                if not any(d.iterdir()):
                    d.rmdir()
    return len(files) - len(kept)


def needed_validations(st: Settings, model: str) -> set[str]:
    """The stored results that registered versions of ``model`` depend on.

    Each version's training data (its ``mlops.data.md5`` tag) against the validations on
    record (``state/validation/<partition>.json``), as ``gx_results.needed`` matches
    them. When the registry cannot be read, every partition's validation on record is
    kept instead, so nothing a version depends on is deleted.
    """
    folder = st.state_dir / "validation"
    summaries = {p.stem: io.read_json(p) for p in sorted(folder.glob("*.json"))}
    try:
        trained_on = _trained_on(st, model)
    except Exception as exc:  # noqa: BLE001 - pruning less is the safe side of any failure
        log.warning(
            "validate: cannot read model %r's versions (%s); keeping the validation on "
            "record of every partition",
            model,
            io.redact(f"{type(exc).__name__}: {exc}")[:300],
        )
        trained_on = [{pid: str(s.get("md5")) for pid, s in summaries.items()}]
    return gx_results.needed(summaries, trained_on, SITE)


def _trained_on(st: Settings, model: str) -> list[dict[str, str]]:
    """Each registered version's training data: partition -> raw md5."""
    from mlops.registry import connect, sqlite_path

    db = sqlite_path(st.tracking_uri)
    if db is not None and not db.is_file():
        return []  # no store yet, so no version (and opening it would create one)
    versions = connect(st).client.search_model_versions(f"name = '{model}'", max_results=10_000)
    return [dict(json.loads(mv.tags.get(tags.DATA_MD5) or "{}")) for mv in versions]


@contextmanager
def locked(gx_root: Path) -> Iterator[None]:
    """Serialise GX work across processes: GX rewrites its config and docs non-atomically."""
    with io.file_lock(gx_root / "uncommitted" / ".validate.lock"):
        yield


# --------------------------------------------------------------------------- offline Data Docs
def offline_page(page: str, prefix: str, images: Collection[str]) -> str:
    """GX's HTML ``page`` loading nothing from another host.

    A remote jQuery or Bootstrap is swapped for the site's copy in ``static/vendor/``
    (``prefix`` leads from the page to the site root), a remote image for GX's own copy
    in ``static/images/`` when it has one (``images``); every other remote script,
    stylesheet and image, and remote ``url(...)`` in styles, is left out. Font Awesome's
    icons are drawn as characters (``ICONS``).
    """

    def local(m: re.Match[str]) -> str:
        tag, kind = m.group(0), m.group(1).lower()
        found = _URL.search(tag)
        if found is None:
            return tag
        url = found.group(2)
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if kind == "link" and "icon" in tag.lower():
            return tag.replace(found.group(0), f'{found.group(1)}="{prefix}static/images/{name}"')
        if not _REMOTE.match(url):
            return tag
        if kind == "img":
            target = f"{prefix}static/images/{name}" if name in images else None
        else:
            shipped = _shipped(name)
            target = None if shipped is None else f"{prefix}{VENDOR}/{shipped}"
        if target is None:
            return ""
        return _PINNED.sub("", tag.replace(found.group(0), f'{found.group(1)}="{target}"'))

    page = _CSS_URL.sub("none", _TAG.sub(local, page))
    return page.replace("</head>", ICONS + "</head>", 1)


def _shipped(name: str) -> str | None:
    """The file in ``data_docs_assets/`` standing in for a library GX loads by ``name``."""
    if re.fullmatch(r"jquery(-[\d.]+)?(\.min)?\.js", name):
        return "jquery.min.js"
    return name if name in ("bootstrap.min.js", "bootstrap.min.css") else None


def _depth(doc: Mapping[str, Any]) -> int:
    """How many folders below the site root GX writes the page of ``doc``."""
    kind = str(doc.get("renderer_type") or "")
    dots = str(doc.get("expectation_suite_name") or "").count(".")
    if "ValidationResults" in kind or "ProfilingResults" in kind:
        return dots + 4  # validations/<suite, split at dots>/<run>/<time>/<batch>.html
    if "ExpectationSuite" in kind:
        return dots + 1  # expectations/<suite, split at dots>.html
    return 0


OFFLINE_CLASSES = ("OfflinePageView", "OfflineIndexPageView", "OfflineSiteBuilder")


@cache
def _offline_classes() -> dict[str, type]:
    """GX's site builder and page views, made to build Data Docs that open offline."""
    import great_expectations
    from great_expectations.render import RenderedComponentContent
    from great_expectations.render.renderer.site_builder import SiteBuilder
    from great_expectations.render.view import DefaultJinjaPageView
    from jinja2 import pass_context

    gx_images = Path(great_expectations.__file__).parent / "render/view/static/images"
    images = frozenset(p.name for p in gx_images.iterdir())

    class OfflinePageView(DefaultJinjaPageView):
        """A page whose tables are HTML and whose scripts and styles are the site's own."""

        @pass_context
        def render_content_block(
            self,
            jinja_context: Any,
            content_block: Any,
            index: Any = None,
            content_block_id: Any = None,
            render_to_markdown: bool = False,
        ) -> Any:
            block = content_block
            if isinstance(block, RenderedComponentContent):
                block = block.to_json_dict()
            html = isinstance(block, dict) and not render_to_markdown
            kind = block.get("content_block_type") if html else None
            if kind == "bootstrap_table":
                content_block = gx_results.static_table(
                    block, lambda v: self.render_content_block(jinja_context, v)
                )
            elif kind == "graph":
                content_block = {"content_block_type": "text", "text": [NO_CHART]}
            return super().render_content_block(
                jinja_context, content_block, index, content_block_id, render_to_markdown
            )

        def render(self, document: Any, template: Any = None, **kwargs: Any) -> str:
            doc = document.to_json_dict() if hasattr(document, "to_json_dict") else document
            page = super().render(document, template, **kwargs)
            return offline_page(str(page), "../" * _depth(doc), images)

    class OfflineIndexPageView(OfflinePageView):
        """The site's index page, offline as the other pages are."""

        _template = "index_page.j2"

    class OfflineSiteBuilder(SiteBuilder):
        """GX's site builder with the offline views; copies ``data_docs_assets/`` in too."""

        def __init__(  # GX passes only the arguments named here (and **config)
            self,
            data_context: Any,
            store_backend: Any,
            site_name: str | None = None,
            site_index_builder: dict[str, Any] | None = None,
            site_section_builders: dict[str, Any] | None = None,
            runtime_environment: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            view = {"module_name": __name__, "class_name": "OfflinePageView"}
            index = {
                "class_name": "DefaultSiteIndexBuilder",
                **(site_index_builder or {}),
                "view": {**view, "class_name": "OfflineIndexPageView"},
            }
            sections = dict(site_section_builders or {})
            for name in ("expectations", "validations", "profiling"):
                cfg = sections.get(name, {})
                if isinstance(cfg, dict):  # not switched off
                    sections[name] = {**cfg, "view": view}
            super().__init__(
                data_context,
                store_backend,
                site_name=site_name,
                site_index_builder=index,
                site_section_builders=sections,
                runtime_environment=runtime_environment,
                **kwargs,
            )

        def build(self, resource_identifiers: Any = None, build_index: bool = True) -> Any:
            out = super().build(resource_identifiers, build_index)
            backend = self.target_store.store_backends["static_assets"]
            for f in sorted(ASSETS.iterdir()):
                kind = mimetypes.guess_type(f.name)[0] or "text/plain"
                backend.set((*VENDOR.split("/"), f.name), f.read_bytes(), content_type=kind)
            return out

    return {c.__name__: c for c in (OfflinePageView, OfflineIndexPageView, OfflineSiteBuilder)}


if not TYPE_CHECKING:  # hidden from mypy, which would type every unknown name as Any

    def __getattr__(name: str) -> Any:
        """GX's classes named in ``great_expectations.yml``, made on first use.

        Defining them at import would import GX with every ``import mlops.gx_context``.
        """
        if name not in OFFLINE_CLASSES:  # e.g. ``__path__``, asked by every from-import
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return _offline_classes()[name]
