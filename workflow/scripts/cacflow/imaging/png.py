"""An 8-bit greyscale PNG encoder (ISO/IEC 15948), faster than Pillow's for CT images."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from cacflow.imaging import DatasetError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(image: np.ndarray, compress_level: int) -> bytes:
    """An 8-bit greyscale PNG (ISO/IEC 15948) of a 2-D uint8 array.

    Every row uses the Up filter and zlib's run-length strategy: for CT windows and
    enlarged tiles this is 2-3x faster than Pillow's per-row adaptive filtering at the same
    zlib level, and the files come out smaller. The bytes depend only on the pixels.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise DatasetError(f"PNG needs a 2-D uint8 image, got {image.dtype} {image.shape}")
    n_rows, n_cols = image.shape
    filtered = np.empty((n_rows, n_cols + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up: each byte minus the byte above it, modulo 256
    filtered[0, 1:] = image[0]
    np.subtract(image[1:], image[:-1], out=filtered[1:, 1:])
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = compressor.compress(filtered.data) + compressor.flush()
    header = struct.pack(">IIBBBBB", n_cols, n_rows, 8, 0, 0, 0, 0)  # 8-bit grey
    chunks = (_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", data), _png_chunk(b"IEND", b""))
    return _PNG_SIGNATURE + b"".join(chunks)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
