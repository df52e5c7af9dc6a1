"""The commands users type: amigofs mount, unmount, workspaces, stats, prefetch, demo, and mount.fuse.amigofs."""
