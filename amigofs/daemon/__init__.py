"""The mount daemon: serving FUSE, its lifecycle, and what it shares with the commands (the mount table, the stats file)."""
