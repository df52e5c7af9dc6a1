"""``python -m amigofs.emulator``: the emulator without the main amigofs command line."""

from __future__ import annotations

import argparse
import sys

from amigofs.emulator import cli


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m amigofs.emulator")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
