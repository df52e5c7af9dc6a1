"""The emulator's revoke and grant (POST /__control), which tests/test_revoked.py uses to take a
workspace away from the mount's key: the workspace's every route answers 403 as the Platform API
does for a workspace the key cannot see, the others stay open, and a grant gives it back. In the
test's process (tests/unit/emulator_app.py): no server to start."""

from __future__ import annotations

from tests.unit.emulator_app import in_process_emulator

FORBIDDEN = {"detail": "Insufficient permissions for this workspace."}


async def test_the_emulator_revokes_and_grants_a_workspace_at_run_time() -> None:
    async with in_process_emulator(workspaces=2, calls_per_workspace=3, max_duration=5.0) as emu:
        client = emu.client
        revoked, other = (ws.id for ws in emu.data.workspaces)
        recording = next(r for r in emu.data.recordings() if r.workspace_id == revoked)
        base = f"/v1/{revoked}/recordings/{recording.call_sid}"
        routes = [
            f"/v1/{revoked}/calls",
            f"{base}/urls",
            f"{base}/metadata",
            f"{base}/download/{recording.inbound_filename}",
        ]
        assert (await emu.control(revoke=[revoked]))["revoked"] == [revoked]
        for route in routes:
            answer = await client.get(route)
            assert (answer.status_code, answer.json()) == (403, FORBIDDEN), route
        assert (await client.get(f"/v1/{other}/calls")).status_code == 200
        assert (await client.get("/v1/workspaces")).status_code == 200
        assert (await emu.control(grant=[revoked]))["revoked"] == []
        for route in routes:
            assert (await client.get(route)).status_code == 200, route
        refused = await client.post("/__control", json={"revoke": ["nope"]})
        assert refused.status_code == 400
