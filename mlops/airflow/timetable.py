"""The scoring DAG's timetable: one data interval per cron tick, up to an optional end.

``schedule.end`` bounds the scheduled replay here, in the timetable, and not as the DAG's
``end_date``: Airflow creates no task for a run whose logical date is after the DAG's
end date, so a manual run triggered from the UI (whose logical date is "now") would
succeed with nothing done. With the bound in the timetable, scheduled runs stop after
``end`` and a manual re-score of named partitions runs whatever its logical date.

Airflow deserialises custom timetables only when a plugin registers them:
``mlops.airflow.plugin`` does, through the package's ``airflow.plugins`` entry point.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from airflow.timetables.interval import CronDataIntervalTimetable


class ReplayTimetable(CronDataIntervalTimetable):
    """A cron data-interval timetable whose scheduled runs stop after ``end``.

    Args:
        cron: The cron expression (``schedule.scoring``).
        timezone: Its timezone.
        end: The last data interval start scheduled (``schedule.end``); None: no end.
    """

    def __init__(self, cron: str, timezone: Any, end: datetime | None = None) -> None:
        super().__init__(cron, timezone)
        self.end = end
        if end is not None:
            self.description = f"{self.description}, until {end:%Y-%m-%d}"

    @property
    def expression(self) -> str:
        """The cron expression."""
        return self._expression

    @property
    def summary(self) -> str:
        """What the UI shows: the cron, and the end when there is one."""
        base = super().summary
        return base if self.end is None else f"{base} until {self.end:%Y-%m-%d}"

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        """The next scheduled interval, or None once it would start after ``end``."""
        info = super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )
        interval = None if info is None else info.data_interval
        if interval is None or self.end is None or interval.start <= self.end:
            return info
        return None

    def serialize(self) -> dict[str, Any]:
        """The cron timetable's fields and the end."""
        return {**super().serialize(), "end": None if self.end is None else self.end.isoformat()}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Timetable:
        """Rebuild from ``serialize``'s output."""
        from airflow._shared.timezones.timezone import parse_timezone

        end = data.get("end")
        return cls(
            data["expression"],
            parse_timezone(data["timezone"]),
            None if end is None else datetime.fromisoformat(end),
        )
