"""The suite's two tiers, enforced here rather than by each module remembering a marker.

- ``tests/unit``: no mount, no subprocess; runs in seconds (``pytest tests/unit``).
  tests/unit/conftest.py refuses, at run time, anything that would start a process or mount.
- everything else is the mount tier: it may start the emulator and mount amigofs through its
  command (tests/mounting.py, tests/emulator_proc.py). Each of its tests carries the ``mount``
  marker, given here by directory, so ``-m "not mount"`` selects exactly the unit tier.

``pytest -q`` runs both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_TIER = Path(__file__).parent / "unit"


def in_unit_tier(item: pytest.Item) -> bool:
    return UNIT_TIER in item.path.parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not in_unit_tier(item):
            item.add_marker(pytest.mark.mount)
