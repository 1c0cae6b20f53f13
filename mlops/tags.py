"""Every ``mlops.*`` tag name written to MLflow runs, model versions and models.

Tags are for machines (and the MLflow UI's tag boxes); each name is written here once.
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
APPROVAL = "mlops.approval.status"
APPROVAL_BY = "mlops.approval.by"
APPROVAL_AT = "mlops.approval.at"
APPROVAL_NOTE = "mlops.approval.note"
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
