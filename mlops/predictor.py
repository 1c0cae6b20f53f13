"""The online predictor: the registry's ``champion`` (and ``challenger``), fed by Feast.

A plain class that any server wraps: ``mlops serve`` (FastAPI), a KServe custom
predictor or a Ray Serve deployment (README, "Serving"). It resolves the aliases to
exact versions, follows them (:meth:`Predictor.refresh`, a background poll in the
server) and swaps a new version in atomically: every request reads one immutable
:class:`Arms` snapshot, so a request in flight finishes on the models it started with.

Rows carry their keys and any features; the rest are read from the online store
through the feature service that trained the model. With a challenger, ``serve.shadow``
scores every row with it too (logged, never returned) and ``serve.canary_share`` lets it
answer that share of keys, chosen by a stable hash of the key (:func:`in_canary`).
XGBoost models predict from a float matrix of category codes (:func:`encoder`), the
same numbers batch scoring gives, without pandas on the request path.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from mlops import features, models, thresholds
from mlops.config import Params, Settings
from mlops.registry import CHALLENGER, CHAMPION, Loaded, Registry, RegistryError, connect
from mlops.request_schema import RequestError, Row, Schema, nullable

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
SHADOW = "shadow"
RECENT_VERSIONS = 4  # kept loaded, so a rollback or an alias moving back swaps at once
Reader = Callable[[list[dict[str, Any]]], dict[str, list[Any]]]


def in_canary(key: str, share: float) -> bool:
    """Whether the challenger answers ``key``: a stable hash, the same on every server."""
    if share <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < share


_threads = threading.local()


def one_thread() -> None:
    """Predict on the calling thread alone: OpenMP's pool size is set per thread.

    Requests run side by side on the server's threads; a single-row prediction that
    starts OpenMP threads of its own waits for them on a busy machine (HistGradientBoosting:
    3 ms became 13-80 ms). Set once per thread (``threadpoolctl``).
    """
    if not getattr(_threads, "limited", False):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="openmp")
        _threads.limited = True


def key_text(values: dict[str, Any], keys: list[str]) -> str:
    """One row's entity key as text, the input of :func:`in_canary`."""
    return "\x1f".join(str(values[k]) for k in keys)


Encoder = Callable[[list[dict[str, Any]]], "np.ndarray"]


def _matrix(
    names: list[str], codes: dict[str, dict[str, float]], unseen: dict[str, float]
) -> Encoder:
    """Rows to a float matrix of the columns ``names``, in that order.

    A category column's value becomes its code (``unseen[name]`` when it has none), a
    missing value NaN, any other value a float.
    """
    import numpy as np

    nan = float("nan")

    def encode(rows: list[dict[str, Any]]) -> np.ndarray:
        out = np.empty((len(rows), len(names)), dtype=np.float64)
        for i, r in enumerate(rows):
            line = out[i]
            for j, n in enumerate(names):
                v = r.get(n)
                if v is None:
                    line[j] = nan
                elif n in codes:
                    line[j] = codes[n].get(str(v), unseen[n])
                else:
                    line[j] = float(v)
        return out

    return encode


def encoder(loaded: Loaded) -> Encoder:
    """Rows to the float matrix an XGBoost booster predicts from, in the model's order.

    Category values become their code in the learned list (``OTHER``'s code in a capped
    list, missing elsewhere), as :func:`mlops.models.align_categories` does for batches.
    """
    codes = {k: {v: float(i) for i, v in enumerate(c)} for k, c in loaded.categories.items()}
    unseen = {
        k: float(len(c) - 1) if models.is_capped(c) else float("nan")
        for k, c in loaded.categories.items()
    }
    return _matrix(list(loaded.features), codes, unseen)


def hgb_encoder(loaded: Loaded) -> Encoder | None:
    """Rows to the matrix a scikit-learn HistGradientBoosting pipeline's model predicts from.

    The pipeline ``models.build`` makes: an ordinal encoder over the category columns,
    then the numbers as they are. The codes are the encoder's own (its sorted categories;
    a value it never saw is missing), after a capped column's ``OTHER`` mapping, so the
    model sees what the pipeline would give it. None for any other estimator.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    pipe = loaded.model
    if not isinstance(pipe, Pipeline) or len(pipe.steps) != 2:
        return None
    pre, est = pipe.steps[0][1], pipe.steps[1][1]
    hgb = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
    parts = getattr(pre, "transformers_", None)
    if not isinstance(est, hgb) or parts is None or len(parts) < 2:
        return None
    (_, enc, cats), (_, _, nums) = parts[0], parts[1]
    spec = [t[1] for t in getattr(pre, "transformers", [])]  # as built: fitted, it is a function
    if not isinstance(enc, OrdinalEncoder) or spec[1:2] != ["passthrough"]:
        return None
    nan = float("nan")
    codes: dict[str, dict[str, float]] = {}
    unseen: dict[str, float] = {}
    for j, c in enumerate(cats):
        table = {str(v): float(i) for i, v in enumerate(enc.categories_[j])}
        learned = loaded.categories.get(c, [])
        if models.is_capped(learned):
            # A value outside the learned list is OTHER; one inside it the encoder never
            # saw is missing, as the pipeline's encoder makes it.
            table = {**dict.fromkeys(learned, nan), **table}
            unseen[c] = table.get(models.OTHER, nan)
        else:
            unseen[c] = nan
        codes[c] = table
    return _matrix([*cats, *nums], codes, unseen)


@dataclass(frozen=True)
class Model:
    """One loaded version with its fastest exact way to predict."""

    loaded: Loaded
    arm: str
    task: str
    encode: Encoder | None = None

    @classmethod
    def of(cls, loaded: Loaded, arm: str, task: str) -> Model:
        """Wrap ``loaded``: XGBoost and HistGradientBoosting predict from a matrix.

        Other estimators go through pandas and their pipeline, as batch scoring does.
        """
        if loaded.flavor == "xgboost":
            # One thread per request: requests run side by side, and on a busy machine a
            # threaded single-row prediction waits for its threads (0.3 ms becomes 2-14 ms).
            loaded.model.get_booster().set_param({"nthread": 1})
            return cls(loaded, arm, task, encoder(loaded))
        return cls(loaded, arm, task, hgb_encoder(loaded))

    @property
    def threshold(self) -> float | None:
        """Classification: the version's decision threshold."""
        if self.task != "classification":
            return None
        t = self.loaded.threshold
        return thresholds.DEFAULT_THRESHOLD if t is None else t

    def predict(self, rows: list[dict[str, Any]], params: Params) -> np.ndarray:
        """Probability of the positive class (classification) or the value, per row."""
        import numpy as np

        if self.encode is not None:
            x = self.encode(rows)
            if self.loaded.flavor == "xgboost":
                out = self.loaded.model.get_booster().inplace_predict(x)
                return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)[:, -1]
            est = self.loaded.model.steps[-1][1]
            return models.predict(est, x, self.task)
        import pandas as pd

        return self.loaded.predict(pd.DataFrame(rows), params.contract)


@dataclass(frozen=True)
class Arms:
    """The models one request is answered with: an immutable snapshot."""

    champion: Model
    challenger: Model | None = None
    loaded_at: float = field(default_factory=time.time)

    def versions(self) -> dict[str, str]:
        """Alias to version of what is loaded."""
        out = {CHAMPION: self.champion.loaded.version}
        if self.challenger is not None:
            out[CHALLENGER] = self.challenger.loaded.version
        return out


@dataclass
class Answer:
    """What one request got, and the rows to append to the prediction log."""

    predictions: list[dict[str, Any]]
    records: list[dict[str, Any]]
    feature_seconds: float
    store_reads: int


class Predictor:
    """Serve the registry's champion (and challenger) with Feast's online features."""

    def __init__(
        self,
        params: Params,
        st: Settings,
        reader: Reader | None = None,
        registry: Registry | None = None,
    ) -> None:
        """Prepare the schema and store reader; :meth:`load` loads the models."""
        self.params = params
        self.st = st
        self.reader = reader or features.online_reader(params, st)
        self.registry = registry
        self.schema = Schema.build(
            params.contract, features.infer_key_types(params, st), params.serve.max_batch_rows
        )
        self.arms: Arms | None = None
        self.degraded: str | None = None
        self.swaps = 0
        self.on_swap: list[Callable[[Arms, Arms | None], None]] = []
        self._lock = threading.Lock()
        self._recent: dict[str, Model] = {}  # loaded versions, oldest first

    @property
    def wants_challenger(self) -> bool:
        """Whether a challenger is loaded at all (shadow or canary configured)."""
        cfg = self.params.serve
        return cfg.shadow or cfg.canary_share > 0

    def _registry(self) -> Registry:
        if self.registry is None:
            self.registry = connect(self.st)
        return self.registry

    def _aliases(self) -> dict[str, str | None]:
        reg, name = self._registry(), self.params.model_name
        wanted = (CHAMPION, CHALLENGER) if self.wants_challenger else (CHAMPION,)
        out: dict[str, str | None] = {}
        for a in wanted:
            out[a] = reg.retry(partial(reg.alias_version, name, a), f"resolve {name}@{a}")
        return out

    def load(self) -> Arms:
        """Resolve the aliases and load the versions they name; swap them in.

        Raises:
            RegistryError: the model has no champion, or a version cannot be loaded.
        """
        with self._lock:
            return self._load(self._aliases())

    def _load(self, aliases: dict[str, str | None]) -> Arms:
        name, task = self.params.model_name, self.params.contract.task
        champ = aliases.get(CHAMPION)
        if champ is None:
            raise RegistryError(f"model {name!r} has no '{CHAMPION}' version; train and promote")
        old = self.arms
        reg = self._registry()

        def model(version: str, arm: str) -> Model:
            known = self._recent.get(version)
            if known is not None:  # a rollback returns to a version still in memory
                return Model(known.loaded, arm, task, known.encode)
            loaded = reg.retry(lambda: reg.load(name, version), f"load {name} v{version}")
            fresh = Model.of(loaded, arm, task)
            # One prediction before it answers anyone: the first is several times slower.
            fresh.predict([dict.fromkeys(self.params.contract.feature_names)], self.params)
            self._recent[version] = fresh
            while len(self._recent) > RECENT_VERSIONS:
                self._recent.pop(next(iter(self._recent)))
            return fresh

        chall = aliases.get(CHALLENGER)
        new = Arms(
            model(champ, CHAMPION),
            model(chall, CHALLENGER) if chall is not None and chall != champ else None,
        )
        self.arms = new  # one assignment: requests read the old or the new snapshot
        if old is None or old.versions() != new.versions():
            if old is not None:
                self.swaps += 1
            log.info("serving %s %s", name, new.versions())
            for hook in self.on_swap:
                hook(new, old)
        return new

    def refresh(self) -> bool:
        """Re-read the aliases; load and swap in what moved. True when something changed.

        A registry that cannot be reached, or a version that cannot be loaded, keeps the
        loaded versions and marks the predictor degraded (``degraded`` holds why) until a
        refresh succeeds again.
        """
        try:
            aliases = self._aliases()
            current = self.arms.versions() if self.arms else {}
            wanted = {k: v for k, v in aliases.items() if v is not None}
            if CHAMPION in wanted and wanted.get(CHALLENGER) == wanted[CHAMPION]:
                wanted.pop(CHALLENGER)
            if wanted == current:
                self.degraded = None
                return False
            with self._lock:
                self._load(aliases)
            self.degraded = None
            return True
        except (RegistryError, OSError, ConnectionError) as exc:
            self.degraded = f"registry unreachable, serving the loaded versions: {exc}"
            log.warning("%s", self.degraded)
            return False
        except Exception as exc:  # a version that fails to load must not end the polling
            self.degraded = f"cannot load the aliased version, serving the loaded ones: {exc!r}"
            log.exception("%s", self.degraded)
            return False

    def check_store(self) -> None:
        """Read one made-up key from the online store; raises when it cannot be reached."""
        keys = self.params.contract.entity_keys
        probe = {k: 0 if self.schema.key_types.get(k) == "int" else "__ready__" for k in keys}
        self.reader([probe])

    def predict(self, rows: list[Row], request_id: str) -> Answer:
        """Answer validated rows; the log records carry everything but the latency.

        Raises:
            RequestError: a feature the contract requires is neither sent nor stored.
            RegistryError: no model is loaded yet.
        """
        arms = self.arms
        if arms is None:
            raise RegistryError("no model is loaded yet")
        one_thread()
        c = self.params.contract
        now = datetime.now(UTC)
        values, secs, reads = self._features(rows)
        share = self.params.serve.canary_share if arms.challenger is not None else 0.0
        canary = [in_canary(key_text(v, c.entity_keys), share) for v in values]
        arm_of = [arms.challenger if x else arms.champion for x in canary]
        scores: dict[str, Any] = {}
        for m in {id(m): m for m in arm_of}.values():
            idx = [i for i, a in enumerate(arm_of) if a is m]
            scores[m.arm] = (idx, m.predict([values[i] for i in idx], self.params))  # type: ignore[union-attr]
        out_pred: list[dict[str, Any]] = [{}] * len(values)
        records: list[dict[str, Any]] = []
        for arm, (idx, pred) in scores.items():
            m = arms.champion if arm == CHAMPION else arms.challenger
            for i, p in zip(idx, pred, strict=True):
                answer = self._answer(values[i], float(p), m)  # type: ignore[arg-type]
                out_pred[i] = answer
                records.append(self._record(values[i], answer, request_id, now))
        if self.params.serve.shadow and arms.challenger is not None:
            shadow = arms.challenger.predict(values, self.params)
            for v, p in zip(values, shadow, strict=True):
                answer = self._answer(v, float(p), arms.challenger)
                records.append(self._record(v, {**answer, "arm": SHADOW}, request_id, now))
        return Answer(out_pred, records, secs, reads)

    def _answer(self, values: dict[str, Any], p: float, m: Model) -> dict[str, Any]:
        out = {k: values[k] for k in self.params.contract.entity_keys}
        out["prediction"] = p
        cut = m.threshold
        if cut is not None:
            out["predicted_label"] = int(p >= cut)
        out.update(model_name=m.loaded.name, model_version=m.loaded.version, arm=m.arm)
        return out

    def _record(
        self, values: dict[str, Any], answer: dict[str, Any], rid: str, now: datetime
    ) -> dict[str, Any]:
        c = self.params.contract
        rec = {k: values[k] for k in [*c.entity_keys, *c.feature_names]}
        ts = values.get(c.timestamp) or now
        rec[c.timestamp] = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
        rec.update(
            prediction=answer["prediction"],
            predicted_label=answer.get("predicted_label"),
            model_name=answer["model_name"],
            model_version=answer["model_version"],
            arm=answer["arm"],
            request_id=rid,
            served_at=now,
        )
        return rec

    def _features(self, rows: list[Row]) -> tuple[list[dict[str, Any]], float, int]:
        """Each row's values: what was sent, the rest from the online store."""
        c = self.params.contract
        names = c.feature_names
        values = [dict(r.values) for r in rows]
        missing = [i for i, r in enumerate(rows) if not r.given.issuperset(names)]
        if not missing:
            return values, 0.0, 0
        t0 = time.perf_counter()
        got = self.reader([{k: values[i][k] for k in c.entity_keys} for i in missing])
        secs = time.perf_counter() - t0
        errors = []
        for j, i in enumerate(missing):
            given = rows[i].given
            for f in c.features:
                if f.name not in given:
                    values[i][f.name] = got[f.name][j]
                if values[i][f.name] is None and not nullable(f):
                    key = ", ".join(f"{k}={values[i][k]!r}" for k in c.entity_keys)
                    errors.append(
                        {
                            "loc": ["rows", i, f.name] if len(rows) > 1 else [f.name],
                            "field": f.name,
                            "msg": f"not sent and not in the online store for {key}",
                            "rule": self.schema.rules[f.name],
                            "type": "missing_feature",
                        }
                    )
        if errors:
            raise RequestError(errors)
        return values, secs, len(missing)
