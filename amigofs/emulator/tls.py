"""HTTPS for the emulator: a self-signed certificate made at start.

The real API is reached over TLS, so a client pays a handshake per new connection; with ``--tls``
the emulator makes a fresh key and certificate (``openssl req -x509``, as the venv has no
``cryptography``) valid for the listening host, localhost, 127.0.0.1 and ::1, and prints the
certificate's path before its listening line (process.CERTIFICATE_PREFIX). A client trusts it by
that file (``SSL_CERT_FILE``, or an ``ssl`` context with it as the CA file); certificate checks
stay on.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

OPENSSL_TIMEOUT = 30.0
CERTIFICATE_DAYS = 7


class CertificateError(RuntimeError):
    """The certificate could not be made (no openssl, or it failed)."""


def _subject_names(host: str) -> list[str]:
    names = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    if host not in ("", "0.0.0.0", "::", "localhost"):
        try:
            name = f"IP:{ipaddress.ip_address(host)}"
        except ValueError:
            name = f"DNS:{host}"
        if name not in names:
            names.append(name)
    return names


def make_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """Write a fresh self-signed certificate and its key into ``directory`` (which should be
    private to this user); returns (certificate, key) paths."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateError("--tls needs the openssl command (apt-get install openssl)")
    certificate = directory / "emulator-cert.pem"
    key = directory / "emulator-key.pem"
    argv = [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(certificate),
        "-days", str(CERTIFICATE_DAYS), "-subj", "/CN=amigofs emulator",
        "-addext", "subjectAltName=" + ",".join(_subject_names(host)),
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext", "extendedKeyUsage=serverAuth",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CertificateError(f"openssl failed: {error}") from None
    if result.returncode != 0:
        raise CertificateError(f"openssl failed: {result.stderr.strip()[-500:]}")
    os.chmod(key, 0o600)
    return certificate, key
