"""The emulator's TLS (issue 13): a certificate made at start, which a client (and a mount, through
SSL_CERT_FILE) trusts with certificate checks on. It needs a real socket, so a real process;
the rest of the link model (the shared uplink, max_connections) is tested in virtual time in
tests/unit/test_link_model.py.
"""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.emulator_proc import running_emulator


def test_tls_serves_the_same_bytes_to_a_client_trusting_the_certificate() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=2, tls=True) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        assert emu.certificate is not None
        rec = next(emu.data.recordings())
        base = f"/v1/{rec.workspace_id}/recordings/{rec.call_sid}"
        name = rec.filenames[1]
        with httpx.Client(
            base_url=emu.url, headers=emu.auth_headers, verify=emu.ssl_context(), timeout=10.0
        ) as client:
            assert client.get(f"{base}/metadata").content == rec.metadata_bytes
            response = client.get(f"{base}/download/{name}", headers={"Range": "bytes=100-50099"})
            assert response.status_code == 206
            assert response.content == emu.data.read_range(
                rec.workspace_id, rec.call_sid, name, 100, 50_100
            )
        # Certificate checks on, without the emulator's certificate: refused at the handshake.
        with (
            httpx.Client(base_url=emu.url, headers=emu.auth_headers, timeout=10.0) as untrusting,
            pytest.raises(httpx.ConnectError) as refused,
        ):
            untrusting.get(f"{base}/metadata")
        cause = refused.value.__cause__ or refused.value.__context__
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        assert cause is not None, repr(refused.value)
        assert emu.stats()["requests"] == {
            "get-recording-metadata": 1,
            "download-recording-file": 1,
        }
