"""An emulator of the Amigo Platform API subset that amigofs uses.

It is part of the product: tests, ``amigofs demo`` and the benchmarks run against it on loopback.
``config`` holds the knobs, ``data`` the deterministic synthetic dataset (with byte ranges of the
stored files computed on demand, and workspaces of more than 10,000 calls made call by call, so
a million cost no memory), made of ``calls`` (workspaces, calls, recordings and how they are
made), ``call_list`` (a workspace's calls in listing order), ``sids`` (the SID codec), ``audio``
(the stored audio with its own G.711 and WAV code, ground truth for amigofs') and ``faults``
(what is broken on purpose), all drawn from the seed by ``seeded``; ``app`` the raw ASGI
application, ``link`` its model of the network (an uplink shared by all responses, a cap on
requests in flight), ``tls`` the self-signed certificate of ``--tls``, and ``server`` runs it
with hypercorn under trio.

Link profiles (``--link-profile``, config.LINK_PROFILES): ``loopback`` (the default: no latency,
no limits) and ``internet``, the benchmarks' model of the API across the internet: 50 ms latency
per request, 3 MB/s per response, 24 MB/s shared by all responses, at most 32 requests in
flight with the rest queued.
"""

from __future__ import annotations

from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Dataset

__all__ = ["Dataset", "EmulatorConfig"]
