"""`amigofs workspaces`: the workspaces the API key can list (id, slug, name), to find
what to give `amigofs mount --workspace`. It takes the server and key as `mount` does:
--base-url, --api-key-file, --config, AMIGOFS_* and AMIGO_API_KEY."""

from __future__ import annotations

import argparse
import json
import sys

from amigofs.commands import exits
from amigofs.commands.arguments import (
    UsageError,
    add_server_arguments,
    mount_settings,
    read_api_key,
)
from amigofs.daemon import preflight


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def run(args: argparse.Namespace) -> int:
    import trio

    settings = mount_settings(args)
    api_key = read_api_key(settings.api_key_file)
    config = preflight.client_config(settings.base_url, settings.timeout)
    try:
        listed = trio.run(preflight.list_workspaces, config, api_key)
    except preflight.Refused as exc:
        raise UsageError(str(exc)) from None
    except preflight.Unreachable as exc:
        # As `amigofs mount` says it: worth trying again later (exits.UNREACHABLE).
        raise exits.Unavailable(f"cannot list workspaces: {exc}") from None
    rows = sorted(listed, key=lambda ws: (ws.name.lower(), ws.id))
    if args.json:
        print(json.dumps([{"id": w.id, "slug": w.slug, "name": w.name} for w in rows], indent=2))
        return 0
    if not rows:
        print(f"amigofs: the key can list no workspace at {settings.base_url}", file=sys.stderr)
        return 0
    slug_width = max(len("SLUG"), *(len(w.slug) for w in rows))
    print(f"{'ID':<36}  {'SLUG':<{slug_width}}  NAME")
    for w in rows:
        print(f"{w.id:<36}  {w.slug:<{slug_width}}  {w.name}")
    return 0
