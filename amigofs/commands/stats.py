"""`amigofs stats`: a running mount's counters, as text, JSON or Prometheus metrics."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from amigofs.commands.arguments import UsageError, add_mountpoint_argument
from amigofs.commands.metrics import render
from amigofs.daemon.control import NotAMount, format_stats, read_stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mountpoint_argument(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the counters as JSON")
    output.add_argument(
        "--prometheus",
        action="store_true",
        help="print them in the Prometheus text format (for node_exporter's textfile collector)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        document = read_stats(Path(os.path.realpath(Path(args.mountpoint).absolute())))
    except NotAMount as exc:
        raise UsageError(str(exc)) from None
    if args.prometheus:
        sys.stdout.write(render(document))
    else:
        print(json.dumps(document, indent=2) if args.json else format_stats(document))
    return 0
