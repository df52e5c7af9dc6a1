"""The ``amigofs emulator`` subcommand: serve the API emulator on a port.

Link profiles (``--link-profile``) set the link knobs at once, for benchmarks that must see what
the internet adds; explicit options override a profile's values:

- ``loopback`` (the default): no latency, no bandwidth limits, no cap on connections.
- ``internet``: ``--latency 0.05`` (50 ms before each answer), ``--bandwidth 3000000`` (3 MB/s
  per response, the vendor proxy's cap per download), ``--link-bandwidth 24000000`` (24 MB/s
  shared by every response at once: one uplink), ``--max-connections 32`` with
  ``--over-capacity queue``. Add ``--tls`` to pay TLS handshakes too.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import trio

from amigofs.emulator.config import FAULT_KINDS, LINK_PROFILES, OVER_CAPACITY_MODES, EmulatorConfig
from amigofs.emulator.process import certificate_line, listening_line
from amigofs.emulator.server import serve
from amigofs.emulator.tls import CertificateError, make_certificate

log = logging.getLogger(__name__)

API_KEY_ENV = "AMIGO_API_KEY"

# (flag, EmulatorConfig field, type, help)
_KNOB_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--seed", "seed", int, "seed of the synthetic dataset; same seed, same bytes (default 1)"),
    ("--workspaces", "workspaces", int, "workspaces the key owns (default 2)"),
    (
        "--calls",
        "calls_per_workspace",
        int,
        "recorded calls per workspace (default 25); above 10000 they are made on demand, so "
        "a million cost no memory",
    ),
    ("--long-calls", "long_calls", int, "of those, calls lasting --long-duration (default 0)"),
    ("--long-duration", "long_duration", float, "seconds of a long call (default 3600)"),
    ("--min-duration", "min_duration", float, "shortest ordinary call in seconds (default 5)"),
    ("--max-duration", "max_duration", float, "longest ordinary call in seconds (default 120)"),
    (
        "--null-sid-calls",
        "null_sid_calls",
        int,
        "extra calls per workspace listed with call_sid null (default 2)",
    ),
    (
        "--no-recording-calls",
        "no_recording_calls",
        int,
        "extra calls per workspace listed with has_recording false (default 2)",
    ),
    (
        "--archived",
        "archived_calls",
        int,
        "recorded calls per workspace (the oldest) answering 202 archived (default 0)",
    ),
    (
        "--not-configured",
        "not_configured_workspaces",
        int,
        "workspaces whose recording endpoints answer 503 not configured (default 0)",
    ),
    (
        "--hostile-listing",
        "hostile_listing",
        bool,
        "add invalid entries (bad ids, path tricks, control characters, duplicates) to every "
        "listing page",
    ),
    (
        "--bad-metadata",
        "bad_metadata",
        int,
        "recorded calls per workspace (the newest) whose metadata is truncated, not JSON, or "
        "has a negative or absurd size (default 0)",
    ),
    (
        "--bad-rows",
        "bad_rows",
        int,
        "recorded calls per workspace (after the --evil-urls ones) listed as starting in 0001 or "
        "2300, or whose metadata says duration_seconds 1e308 (default 0)",
    ),
    (
        "--size-mismatch",
        "size_mismatch",
        int,
        "next recorded calls per workspace whose stored audio is shorter or longer than the "
        "metadata says, or whose bodies end early (default 0)",
    ),
    (
        "--evil-urls",
        "evil_urls",
        int,
        "next recorded calls per workspace whose download links point at another host or "
        "outside the call's download path (default 0)",
    ),
    (
        "--evil-host",
        "evil_host",
        str,
        "the foreign server those links point at (default http://127.0.0.2:9)",
    ),
    ("--fault-rate", "fault_rate", float, "probability of a fault per /v1 request (default 0)"),
    (
        "--fault-kinds",
        "fault_kinds",
        str,
        f"comma-separated faults to draw from (default all: {','.join(FAULT_KINDS)})",
    ),
    ("--retry-after", "retry_after", int, "Retry-After seconds of a 429 fault (default 1)"),
    ("--stall-seconds", "stall_seconds", float, "how long a stall fault pauses (default 120)"),
    ("--latency", "latency", float, "seconds added before answering each /v1 request"),
    ("--bandwidth", "bandwidth", int, "bytes per second per response body (default unlimited)"),
    (
        "--link-bandwidth",
        "link_bandwidth",
        int,
        "bytes per second shared by all response bodies at once, one uplink (default unlimited)",
    ),
    (
        "--max-connections",
        "max_connections",
        int,
        "requests in flight at most, as a vendor proxy caps them (default no cap)",
    ),
    (
        "--over-capacity",
        "over_capacity",
        str,
        f"what a request beyond --max-connections gets: {' or '.join(OVER_CAPACITY_MODES)} "
        "(with Retry-After: --retry-after) (default queue)",
    ),
    (
        "--new-calls-per-second",
        "new_calls_per_second",
        float,
        "new calls added at the head of every workspace per second while running, so listing "
        "offsets shift (default 0)",
    ),
    (
        "--page-rows",
        "page_rows",
        int,
        "rows a list-calls page holds at most, fewer than a client asks for; the continuation "
        "token follows the rows sent (default: as many as asked)",
    ),
    (
        "--download-framing",
        "download_framing",
        str,
        "how downloads say their length: length (default), chunked (Range ignored, 200 "
        "without Content-Length) or unknown_total (206 with Content-Range bytes a-b/*)",
    ),
    (
        "--tls",
        "tls",
        bool,
        "serve HTTPS with a self-signed certificate made at start; its path is printed before "
        "the listening line",
    ),
    (
        "--url-ttl",
        "url_ttl",
        float,
        "seconds download links stay valid (default: they never expire)",
    ),
)


_METAVARS = {
    "fault_rate": "P",
    "fault_kinds": "KINDS",
    "bandwidth": "BYTES",
    "link_bandwidth": "BYTES",
    "over_capacity": "MODE",
    "seed": "N",
    "retry_after": "S",
    "evil_host": "URL",
}


def _metavar(name: str, kind: type) -> str:
    return _METAVARS.get(name, "S" if kind is float else "N")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to a (sub)parser."""
    if parser.description is None:
        parser.description = (
            "Serve an emulator of the Amigo Platform API (the endpoints amigofs uses) with a "
            "deterministic synthetic dataset of call recordings."
        )
    parser.epilog = (
        "Once it accepts connections it prints one line, "
        "'amigofs emulator listening on http://HOST:PORT' (https with --tls, after a line "
        "'amigofs emulator certificate PATH'). SIGINT or SIGTERM stop it. "
        "Link profiles: 'loopback' (default: no latency, no limits); 'internet' = --latency "
        "0.05 --bandwidth 3000000 --link-bandwidth 24000000 --max-connections 32 "
        "--over-capacity queue (50 ms a request, 3 MB/s per download, 24 MB/s shared, 32 "
        "requests in flight); options given override the profile's. "
        "Harness endpoints (no auth): GET /__stats, GET /__stats/link (requests in flight, "
        "queued, refused), POST /__stats/reset, "
        "GET|POST /__control (JSON: fault_rate, fault_kinds, latency, bandwidth, url_ttl, "
        "retry_after, stall_seconds, link_bandwidth, max_connections, over_capacity, "
        "new_calls_per_second, page_rows, download_framing, restore: [sid], archive: [sid], "
        "revoke: [ws], grant: [ws], nest_metadata: [sid], add_calls: N or {ws: N}, "
        "understate_sizes: {sid: bytes}, replace: [sid], replace_after_get: [sid])."
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1); one not on loopback needs --public",
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="allow --host to be an address other machines can reach",
    )
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"the bearer key clients must send (default: ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--link-profile",
        dest="emulator_link_profile",
        choices=sorted(LINK_PROFILES),
        default=None,
        help="set the link knobs at once (see below); options given override its values",
    )
    for flag, name, kind, text in _KNOB_FLAGS:
        if kind is bool:
            parser.add_argument(
                flag, dest=f"emulator_{name}", action="store_const", const=True, help=text
            )
            continue
        parser.add_argument(
            flag,
            dest=f"emulator_{name}",
            type=kind,
            default=None,
            metavar=_metavar(name, kind),
            help=text,
        )
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level, e.g. DEBUG for one line a request"
    )


def knob_arguments(knobs: Mapping[str, object]) -> list[str]:
    """The command-line options that set these EmulatorConfig fields: the inverse of
    config_from_args, for whoever starts the emulator as a child process."""
    flags = {name: (flag, kind) for flag, name, kind, _ in _KNOB_FLAGS}
    argv: list[str] = []
    for name, value in knobs.items():
        if name not in flags:
            raise ValueError(f"the emulator has no option for {name!r}")
        flag, kind = flags[name]
        if value is None or (kind is bool and not value):
            continue
        if kind is bool:
            argv.append(flag)
        elif isinstance(value, tuple | list):  # fault_kinds
            argv += [flag, ",".join(str(item) for item in value)]
        else:
            argv += [flag, str(value)]
    return argv


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The EmulatorConfig the options describe; ValueError for a bad combination."""
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        raise ValueError(f"an API key is required: --api-key or ${API_KEY_ENV}")
    profile = getattr(args, "emulator_link_profile", None)
    knobs: dict[str, object] = dict(LINK_PROFILES[profile]) if profile else {}
    for _, name, _, _ in _KNOB_FLAGS:
        value = getattr(args, f"emulator_{name}")
        if value is None:
            continue
        if name == "fault_kinds":
            value = tuple(kind.strip() for kind in str(value).split(",") if kind.strip())
        knobs[name] = value
    return EmulatorConfig(api_key=api_key, **knobs)  # type: ignore[arg-type]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 for bad options, 1 if it can't listen."""
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"amigofs emulator: {error}", file=sys.stderr)
        return 2
    if not args.public and not _is_loopback(args.host):
        print(
            f"amigofs emulator: --host {args.host} is not a loopback address: anyone who can "
            "reach it could use the emulator; pass --public to listen there anyway",
            file=sys.stderr,
        )
        return 2
    level = logging.getLevelName(str(args.log_level).upper())
    if not isinstance(level, int):
        print(f"amigofs emulator: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failure: OSError | None = None
    # The key and certificate live as long as this process, in a directory only we can read.
    tls_dir = Path(tempfile.mkdtemp(prefix="amigofs-emulator-tls-")) if config.tls else None
    try:
        certificate = None
        if tls_dir is not None:
            try:
                cert, key = make_certificate(tls_dir, args.host)
            except CertificateError as error:
                print(f"amigofs emulator: {error}", file=sys.stderr)
                return 1
            certificate = (str(cert), str(key))
        try:
            trio.run(_main, config, args.host, args.port, certificate)
        except* OSError as group:
            failure = _first_os_error(group)
    finally:
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)
    if failure is not None:
        print(
            f"amigofs emulator: cannot listen on {args.host}:{args.port}: {failure}",
            file=sys.stderr,
        )
        return 1
    return 0


def _first_os_error(group: BaseExceptionGroup[OSError]) -> OSError:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, OSError)
    return error


async def _main(
    config: EmulatorConfig, host: str, port: int, certificate: tuple[str, str] | None
) -> None:
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve(
                    config,
                    host=host,
                    port=port,
                    certificate=certificate,
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
            )
            lines = [listening_line(url)]
            if certificate is not None:
                # One write: a reader that waits with select() sees both lines arrive.
                lines.insert(0, certificate_line(certificate[0]))
            print("\n".join(lines), flush=True)
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                stop.set()
                break
