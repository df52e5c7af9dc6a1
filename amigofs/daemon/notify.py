"""sd_notify: telling systemd (a `Type=notify` service) how the mount is doing.

The protocol is one datagram per message on the unix socket named by
$NOTIFY_SOCKET ("@name" for the abstract namespace): "READY=1" once the mount
is live, "STOPPING=1" on the way down, "STATUS=..." a line `systemctl status`
shows. Without $NOTIFY_SOCKET (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other transports: not for a FUSE daemon


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        value = (os.environ if environ is None else environ).get(ENV, "")
        self._address = _address(value) if value else None
        self.ready_sent = False
        self.stopping_sent = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: object) -> bool:
        """Sends KEY=value lines (READY=1 as ready=1); False if not under systemd or failed."""
        if self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8", "replace"))
        except OSError as exc:
            log.warning("cannot notify systemd at $%s: %s", ENV, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        if not self.ready_sent:
            self.ready_sent = True
            self.send(ready=1, status=status, mainpid=os.getpid())

    def stopping(self, status: str) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            self.send(stopping=1, status=status)

    def status(self, status: str) -> None:
        self.send(status=status)
