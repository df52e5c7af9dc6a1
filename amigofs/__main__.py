import sys

from amigofs.commands.cli import main

sys.exit(main())
