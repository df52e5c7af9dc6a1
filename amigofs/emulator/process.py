"""Running the emulator as a child process: the one line it prints once it listens.

`amigofs emulator --port 0` prints ``amigofs emulator listening on http://HOST:PORT``
and nothing else on stdout; the demo, the tests and the benchmarks start it and
wait for that line, with a deadline, instead of guessing a port or sleeping.

With ``--tls`` the URL is ``https://`` and the line before it says where the
self-signed certificate is: ``amigofs emulator certificate /PATH/emulator-cert.pem``
(await_listening_details returns both). The two lines are written at once.
"""

from __future__ import annotations

import selectors
import subprocess
import time
from dataclasses import dataclass
from typing import Any

LISTENING_PREFIX = "amigofs emulator listening on "
CERTIFICATE_PREFIX = "amigofs emulator certificate "


def listening_line(url: str) -> str:
    return LISTENING_PREFIX + url


def certificate_line(path: str) -> str:
    return CERTIFICATE_PREFIX + path


@dataclass(slots=True, frozen=True)
class Listening:
    url: str
    certificate: str | None
    """The PEM file of the self-signed certificate to trust (with --tls), else None."""


def await_listening(process: subprocess.Popen[Any], deadline: float) -> str:
    """The URL the emulator child reports, waiting at most `deadline` seconds.

    Raises TimeoutError if it says nothing in time, RuntimeError if it exits first.
    """
    return await_listening_details(process, deadline).url


def await_listening_details(process: subprocess.Popen[Any], deadline: float) -> Listening:
    """The URL and certificate the emulator child reports, as await_listening."""
    assert process.stdout is not None
    certificate: str | None = None
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
                if line.startswith(CERTIFICATE_PREFIX):
                    certificate = line[len(CERTIFICATE_PREFIX) :].strip()
                    # The listening line came in the same write (see cli._main), so it may sit
                    # in the file's buffer already, where select() cannot see it.
                    raw = process.stdout.readline()
                    line = raw.decode() if isinstance(raw, bytes) else raw
                if line.startswith(LISTENING_PREFIX):
                    return Listening(line[len(LISTENING_PREFIX) :].strip(), certificate)
                if line == "":
                    raise RuntimeError(f"the emulator exited early with status {process.wait()}")
