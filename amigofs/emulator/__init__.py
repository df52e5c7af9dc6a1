"""An emulator of the Amigo Platform API subset that amigofs uses.

It is part of the product: tests, ``amigofs demo`` and the benchmarks run against it on loopback.
``config`` holds the knobs, ``data`` the deterministic synthetic dataset (with byte ranges of the
stored files computed on demand), ``app`` the raw ASGI application and ``server`` runs it with
hypercorn under trio.
"""

from __future__ import annotations

from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Dataset

__all__ = ["Dataset", "EmulatorConfig"]
