"""The Airflow plugin of the package: registers the timetable the scoring DAG uses.

Loaded by Airflow through the ``airflow.plugins`` entry point in ``pyproject.toml``, so
every component that has the package installed (scheduler, DAG processor, API server,
workers) can deserialise the scoring DAG.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops.airflow.timetable import ReplayTimetable


class MlopsPlugin(AirflowPlugin):
    """Registers ``ReplayTimetable``."""

    name = "mlops"
    timetables = [ReplayTimetable]
