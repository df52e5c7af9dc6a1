"""amigofs: the call recordings of the Amigo Platform API as a read-only FUSE filesystem."""

__version__ = "0.1.0"
