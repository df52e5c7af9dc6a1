"""How every amigofs process logs: one line format, the level, and quiet HTTP libraries.

At the bottom of the layers (it imports nothing of amigofs), so that a process of any
layer, the mount's or its fetch worker's, sets up its log the same way."""

from __future__ import annotations

import logging
import os
import sys

# The level, as the fetch worker finds it: the process that starts it sets it here.
LEVEL_ENV = "AMIGOFS_LOG_LEVEL"
FORMAT = "amigofs[%(process)d] %(levelname)s %(name)s: %(message)s"
# Their debug output repeats ours with full URLs (signed download links);
# amigofs.api logs each request itself, without secrets.
QUIETED = ("httpx", "httpcore", "hpack", "hypercorn")


def setup_logging(level: str = "info") -> None:
    # The fetch worker reads it too, so --debug traces its downloads as well.
    os.environ[LEVEL_ENV] = level
    logging.basicConfig(level=getattr(logging, level.upper()), format=FORMAT, stream=sys.stderr)
    for noisy in QUIETED:
        logging.getLogger(noisy).setLevel(logging.WARNING)
