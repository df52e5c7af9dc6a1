"""Whether a call's record loaded ahead of need comes with its download links.

A record loaded ahead of a walk (amigofs.fs.walk.RecordsAhead) costs one request, its
metadata, when the walker only looks at sizes (find, ls -l, du): a links request with
it would double what a stat walk of a million calls asks the API. A walker that reads
the calls it visits (head or `file` over a workspace, tar, a player going through
calls) then pays a round trip for the links at each call's first read, before the one
for its bytes. So the links come with the metadata, in the same round trip, once the
walker has read a call's bytes, and stop coming when it has not for REACH loads: a
stat walk that follows reads costs at most REACH extra requests.
"""

from __future__ import annotations

from dataclasses import dataclass

# Loads ahead with links after the last read: twice the records a walk loads ahead
# (config.Settings.records_in_flight, 32), so that a reader going on through the
# calls never runs out.
REACH = 64


@dataclass(slots=True)
class LinksAhead:
    """One workspace's: its records loaded ahead, and its calls' first reads."""

    reach: int = REACH
    # Loads ahead since a call's bytes were last read; None: none read yet.
    _since_read: int | None = None

    def read(self) -> None:
        """A call's stored bytes were read (its first read)."""
        self._since_read = 0

    def load(self) -> bool:
        """A record is loaded ahead of need: whether with its links."""
        if self._since_read is None or self._since_read >= self.reach:
            return False
        self._since_read += 1
        return True
