"""Every ``mlops.*`` tag name written to MLflow runs, model versions and models.

Tags are for machines (and the MLflow UI's tag boxes); each name is written here once.
People read the descriptions ``mlops.describe`` writes from them.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- runs
STAGE = "mlops.stage"
"""The stage that made a run: ``train``, ``monitor`` or ``label``."""
CANDIDATE = "mlops.candidate"
KIND = "mlops.kind"
SELECTED = "mlops.selected"
PARTITION = "mlops.partition"
MODEL_VERSION = "mlops.model_version"
BREACH = "mlops.breach"
INPUT_MD5 = "mlops.input_md5"
"""The raw md5 of the partition a monitor run's predictions were made from."""
THRESHOLD = "mlops.threshold"
"""A classifier version's decision threshold, chosen on the holdout by ``train.threshold``."""
REALISED_PREFIX = "mlops.realised."
"""A version's realised gate metric on a labelled partition: ``mlops.realised.<partition>``."""
BREACH_KIND = "mlops.breach.kind"
"""What a breach came from: ``drift`` or ``performance``."""
INTERRUPTED = "mlops.interrupted"
"""``true`` on a run its stage was killed in; closed as KILLED on the stage's next start."""
INTERRUPTED_WHY = "mlops.interrupted.why"

# --------------------------------------------------------------------------- airflow
AIRFLOW_PREFIX = "mlops.airflow."
AIRFLOW_DAG_ID = "mlops.airflow.dag_id"
"""On every run started inside an Airflow task: the task instance that started it."""
AIRFLOW_DAG_RUN_ID = "mlops.airflow.dag_run_id"
AIRFLOW_TASK_ID = "mlops.airflow.task_id"
AIRFLOW_TRY_NUMBER = "mlops.airflow.try_number"
AIRFLOW_MAP_INDEX = "mlops.airflow.map_index"
"""A mapped task instance's index (0 and up); absent on a task that is not mapped."""
AIRFLOW_URL = "mlops.airflow.url"
"""The task instance's page in the Airflow UI, when the Airflow base URL is known."""

# --------------------------------------------------------------------------- lineage
DATA_PARTITIONS = "mlops.data.partitions"
DATA_MD5 = "mlops.data.md5"
FEATURE_SERVICE = "mlops.feature_service"
CODE_REVISION = "mlops.code_revision"
RUN_ID = "mlops.run_id"
HOLDOUT_PREFIX = "mlops.holdout_"
FINGERPRINT = "mlops.fingerprint"
"""A hash of what a version was trained from (data, params, code): one version per value."""

# --------------------------------------------------------------------------- evaluation
EVAL_PREFIX = "mlops.eval."
EVAL_HOLDOUT = "mlops.eval.holdout"
EVAL_CHAMPION_VERSION = "mlops.eval.champion_version"
EVAL_CHAMPION_PREFIX = "mlops.eval.champion_"

# --------------------------------------------------------------------------- governance
GATE = "mlops.gate.decision"
GATE_REASONS = "mlops.gate.reasons"
GATE_METRIC = "mlops.gate.metric"
"""What the gate compared, as ``promote`` saw it: the metric, both values, the settings."""
GATE_CANDIDATE = "mlops.gate.candidate"
GATE_CHAMPION = "mlops.gate.champion"
GATE_CHAMPION_VERSION = "mlops.gate.champion_version"
GATE_FLOOR = "mlops.gate.floor"
GATE_MIN_IMPROVEMENT = "mlops.gate.min_improvement"
APPROVAL = "mlops.approval.status"
APPROVAL_BY = "mlops.approval.by"
APPROVAL_AT = "mlops.approval.at"
APPROVAL_NOTE = "mlops.approval.note"
APPROVAL_EXPIRED_AT = "mlops.approval.expired_at"
APPROVAL_EXPIRED_WHY = "mlops.approval.expired_why"
OVERRIDE = "mlops.approval.override"
CHAMPION_SINCE = "mlops.champion_since"
CHALLENGER_SINCE = "mlops.challenger_since"
REPLACED_BY = "mlops.replaced_by"
AUDIT_EXPERIMENT = "mlops.audit_experiment"
CARD = "mlops.card"


def holdout(metric: str) -> str:
    """The version tag holding the holdout value of ``metric`` at training."""
    return f"{HOLDOUT_PREFIX}{metric}"


def realised(partition: str) -> str:
    """The version tag holding the realised gate metric on ``partition``."""
    return f"{REALISED_PREFIX}{partition}"


def evaluation(metric: str) -> str:
    """The version tag holding the candidate's evaluated ``metric``."""
    return f"{EVAL_PREFIX}{metric}"


def champion_evaluation(metric: str) -> str:
    """The version tag holding the champion's ``metric`` on the same holdout."""
    return f"{EVAL_CHAMPION_PREFIX}{metric}"


def search(tag: str, value: str) -> str:
    """An MLflow search filter on a tag: ``tags.`mlops.stage` = 'monitor'``."""
    return f"tags.`{tag}` = '{value}'"
