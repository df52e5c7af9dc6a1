"""The exit statuses of every amigofs command: one for each kind of failure, the same in
every command, so that a script or systemd can tell a mistake to fix from a failure
that is worth trying again (systemd/amigofs@.service: RestartPreventExitStatus=USAGE).

    0    done
    1    failed while running: a mount busy at unmount, a daemon that died
    2    a mistake to fix, retrying changes nothing: a bad flag, config or key file, a key
         the server refuses (HTTP 401/403), a workspace the key cannot see, a mount point
         refused (not a directory, already mounted, holding files), a server TLS
         certificate that is not trusted
    3    the server gave no usable answer now (down, unreachable, 5xx), and the cache
         holds nothing of it to serve: worth trying again later
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
INTERRUPTED = 130


class Unavailable(Exception):
    """The server cannot be reached now: printed as one line, exit status UNREACHABLE."""
