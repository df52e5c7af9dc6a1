"""Call SIDs: the invertible map between (workspace index, serial) and a SID (`SidCodec`)."""

from __future__ import annotations

import hashlib

_MASK64 = (1 << 64) - 1
_SID_MAGIC = 0x616D69676F667321  # b"amigofs!": what a decrypted SID of ours starts with
_SID_WORKSPACE_BITS = 24
_SID_SERIAL_BITS = 40


class SidCodec:
    """The invertible map between (workspace index, serial) and a call SID.

    The SID is ``CA`` and 32 hex digits, the 128-bit block (magic, workspace, serial) enciphered
    by a four-round Feistel network keyed by the seed: SIDs look random and differ between seeds,
    yet any SID maps back to its call in microseconds, and one that is not ours (a random or
    mistyped SID) fails the magic check. Serials count a workspace's calls oldest first, the
    calls added at run time after the seeded ones.
    """

    __slots__ = ("_keys",)

    def __init__(self, seed: int) -> None:
        self._keys = [
            hashlib.blake2b(f"amigofs-emulator:{seed}:sid:{r}".encode(), digest_size=16).digest()
            for r in range(4)
        ]

    def _round(self, r: int, half: int) -> int:
        digest = hashlib.blake2b(half.to_bytes(8, "little"), key=self._keys[r], digest_size=8)
        return int.from_bytes(digest.digest(), "little")

    def encode(self, workspace: int, serial: int) -> str:
        assert 0 <= workspace < 1 << _SID_WORKSPACE_BITS and 0 <= serial < 1 << _SID_SERIAL_BITS
        left, right = _SID_MAGIC, (workspace << _SID_SERIAL_BITS) | serial
        for r in range(4):
            left, right = right, left ^ self._round(r, right)
        return f"CA{(left << 64) | right:032x}"

    def decode(self, sid: str) -> tuple[int, int] | None:
        """(workspace index, serial) of a SID this codec made, else None."""
        if len(sid) != 34 or not sid.startswith("CA"):
            return None
        try:
            block = int(sid[2:], 16)
        except ValueError:
            return None
        if sid != f"CA{block:032x}":  # only the canonical spelling names the call
            return None
        left, right = block >> 64, block & _MASK64
        for r in reversed(range(4)):
            left, right = right ^ self._round(r, left), left
        if left != _SID_MAGIC:
            return None
        return right >> _SID_SERIAL_BITS, right & ((1 << _SID_SERIAL_BITS) - 1)
