import sys

try:
    from amigofs.commands.cli import main
except KeyboardInterrupt:
    # Ctrl-C while the command itself loads: as main says it, without a traceback.
    print("amigofs: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
