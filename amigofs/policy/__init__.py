"""Decisions as plain functions of their inputs: no trio, no SQLite, no I/O.

What a reader gets fetched ahead (readahead), when a program is walking a workspace
(walk), which listing offsets are still missing (listing), how two channels are laid
into one stereo file (stereo), how inode numbers encode a call's files (inodes), and how
long a failure is remembered (failures). Each is tested in microseconds in tests/unit.
"""
