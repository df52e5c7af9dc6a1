"""Whether a call's stored audio file is a WAV container, guessed from its metadata alone.

A stat walk loads each call with one request, the metadata: it gives each channel's
format, rate, size and the call's duration, but not the stored file's name, whose
extension says whether it is a WAV container (served byte for byte) or headerless
samples (served after a synthesized header, so shown that much larger). That name comes
with the download links, fetched when the file is read. Until then the container is
guessed here: a stored file holding at least a WAV header's worth of bytes more than
the duration's samples is a WAV file; one holding about the samples alone is raw.

The guess only decides the size shown before the links are known: the records layer
shows such sizes with no attribute caching (the kernel asks again), and the links,
fetched at the first read, give the truth before any byte is served.
"""

from __future__ import annotations

import math

# The smallest WAV header (RIFF, fmt of 16 bytes, data) and the largest believed
# (amigofs.fs.wav.MAX_HEADER_BYTES: chunks before the samples, LIST and the like).
MIN_WAV_HEADER = 44
MAX_WAV_HEADER = 1 << 20


def guess_wav_container(
    stored_size: int, duration_seconds: float, sample_rate: int, sample_bytes: int | None
) -> bool:
    """Whether a stored file of `stored_size` bytes holding `duration_seconds` of samples
    at `sample_rate`, `sample_bytes` each (None: a format no raw file could be shown
    in), is a WAV container."""
    if sample_bytes is None:
        return True  # headerless samples of an unknown format are not shown at all
    product = duration_seconds * sample_rate
    if not math.isfinite(product) or product < 0:
        return False
    extra = stored_size - round(product) * sample_bytes
    return MIN_WAV_HEADER <= extra <= MAX_WAV_HEADER
