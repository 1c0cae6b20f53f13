"""Feast definitions for the Feast CLI (`feast apply`, `feast ui` run in this folder).

They are derived from the data contract in params.yaml ($MLOPS_PARAMS, else the project's
params.yaml beside this folder), as the pipeline derives them.
"""

from mlops.materialize import repo_objects

globals().update(repo_objects(__file__))
