"""Running the emulator as a child process: the one line it prints once it listens.

`amigofs emulator --port 0` prints ``amigofs emulator listening on http://HOST:PORT``
and nothing else on stdout; the demo, the tests and the benchmarks start it and
wait for that line, with a deadline, instead of guessing a port or sleeping.
"""

from __future__ import annotations

import selectors
import subprocess
import time
from typing import Any

LISTENING_PREFIX = "amigofs emulator listening on "


def listening_line(url: str) -> str:
    return LISTENING_PREFIX + url


def await_listening(process: subprocess.Popen[Any], deadline: float) -> str:
    """The URL the emulator child reports, waiting at most `deadline` seconds.

    Raises TimeoutError if it says nothing in time, RuntimeError if it exits first.
    """
    assert process.stdout is not None
    end = time.monotonic() + deadline
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the emulator did not report its address in time")
            if selector.select(remaining):
                raw = process.stdout.readline()
                line = raw.decode() if isinstance(raw, bytes) else raw
                if line.startswith(LISTENING_PREFIX):
                    return line[len(LISTENING_PREFIX) :].strip()
                if line == "":
                    raise RuntimeError(f"the emulator exited early with status {process.wait()}")
