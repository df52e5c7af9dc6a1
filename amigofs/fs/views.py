"""The views people browse: calls by date, workspaces by name.

    MOUNT/by-date/<workspace_id>/<YYYY-MM-DD>/<HH-MM-SS>_<call_sid> -> ../../../<workspace_id>/<call_sid>
    MOUNT/by-name/<slug> -> ../<workspace_id>

Entries are relative symbolic links, as /dev/disk/by-id has them: a copy of the
mount keeps working links, and `find -type f`, `du` and `rsync -a` count every
recording once. Names hold nothing but a time and the call's SID: recordings are
often health or customer calls, and names show up in many places (shells,
backups, logs). Days and times are the call's start, in UTC or in the zone given
with --timezone (an IANA name).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from amigofs.api.models import from_time_ns, time_ns

BY_DATE = "by-date"
BY_NAME = "by-name"
VIEWS = (BY_DATE, BY_NAME)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(slots=True, frozen=True)
class Days:
    """Day names of call starts in one time zone."""

    zone: dt.tzinfo = dt.UTC

    @classmethod
    def named(cls, name: str | None) -> Days:
        return cls(dt.UTC if name in (None, "UTC") else ZoneInfo(name))

    def day_of(self, started_ns: int) -> str:
        return self._local(started_ns).strftime("%Y-%m-%d")

    def entry_name(self, started_ns: int, call_sid: str) -> str:
        return f"{self._local(started_ns).strftime('%H-%M-%S')}_{call_sid}"

    def _local(self, started_ns: int) -> dt.datetime:
        return from_time_ns(started_ns).astimezone(self.zone)

    def parse(self, name: str) -> dt.date | None:
        """The day a directory name means, or None if it is not one."""
        if not _DAY.fullmatch(name):
            return None
        try:
            return dt.date.fromisoformat(name)
        except ValueError:
            return None

    def bounds_ns(self, day: dt.date) -> tuple[int, int]:
        """The instants [start, end) of a local day, in ns since the epoch (a day of a
        zone's clock change is 23 or 25 hours), held to what the index can hold: a day
        before 1677 or after 2262 (0001-01-01, 9999-12-31) holds no call's start."""
        start = dt.datetime.combine(day, dt.time(), self.zone)
        try:
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), self.zone)
        except OverflowError:  # 9999-12-31 has no day after it
            end = dt.datetime.max.replace(tzinfo=dt.UTC)
        return time_ns(start), time_ns(end)

    def utc_days(self, day: dt.date) -> tuple[dt.date, dt.date]:
        """The UTC days a local day overlaps (for a date-filtered listing)."""
        start, end = self.bounds_ns(day)
        return from_time_ns(start).date(), from_time_ns(end - 1).date()

    def next_day_ns(self, started_ns: int) -> int:
        """The start of the local day after the one `started_ns` falls in."""
        day = self._local(started_ns).date()
        return self.bounds_ns(day)[1]


def call_link(workspace_id: str, call_sid: str) -> str:
    """A by-date entry's target, from its day directory."""
    return f"../../../{workspace_id}/{call_sid}"


def workspace_link(workspace_id: str) -> str:
    return f"../{workspace_id}"


def usable_slug(slug: str) -> bool:
    """A slug that can be a file name as it is: plain characters, no dot-names."""
    return bool(_SLUG.fullmatch(slug))


def parse_entry(name: str) -> str | None:
    """The call SID of a by-date entry name (`HH-MM-SS_<sid>`), or None."""
    time_part, sep, sid = name.partition("_")
    if not sep or not re.fullmatch(r"\d{2}-\d{2}-\d{2}", time_part):
        return None
    return sid
