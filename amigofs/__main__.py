import sys

from amigofs.cli import main

sys.exit(main())
