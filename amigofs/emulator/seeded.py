"""Deterministic randomness: everything the emulator makes is drawn from the config's seed
(never from the wall clock or the global RNG), so two processes with the same config serve
byte-identical data and tests can compute the expected bytes of any range."""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime


def rng(seed: int, *parts: object) -> random.Random:
    """The random source for one thing the dataset makes, named by `parts`."""
    # A str seed is hashed with SHA-512 by random.Random, so it is stable across processes
    # (unlike hash(), which is randomized per process).
    return random.Random(":".join(["amigofs-emulator", str(seed), *map(str, parts)]))


def uuid4(source: random.Random) -> str:
    return str(uuid.UUID(int=source.getrandbits(128), version=4))


def jitter(seed: int, workspace_id: str, what: str, index: int, gap: int) -> int:
    """A seeded value in [0, gap) for one call: cheaper than a Random per call."""
    key = f"{seed}:{workspace_id}:{what}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % gap


def iso_z(moment: datetime) -> str:
    """A moment as the API writes it: UTC, whole seconds, a Z."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
