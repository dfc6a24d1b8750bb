"""An 8-bit greyscale or RGB PNG encoder (ISO/IEC 15948), faster than Pillow's for CT images."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from cacflow.imaging import DatasetError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(image: np.ndarray, compress_level: int) -> bytes:
    """An 8-bit PNG (ISO/IEC 15948) of a uint8 array: greyscale (rows, cols) or RGB
    (rows, cols, 3).

    Every row uses the Up filter and zlib's run-length strategy: for CT windows and
    enlarged tiles this is 2-3x faster than Pillow's per-row adaptive filtering at the same
    zlib level, and the files come out smaller. The bytes depend only on the pixels.
    """
    image = np.asarray(image)
    rgb = image.ndim == 3 and image.shape[2] == 3
    if not (image.ndim == 2 or rgb) or image.dtype != np.uint8:
        raise DatasetError(
            f"PNG needs a uint8 image (rows, cols) or (rows, cols, 3), got {image.dtype} "
            f"{image.shape}"
        )
    n_rows, n_cols = image.shape[:2]
    scanlines = image.reshape(n_rows, -1)  # RGB: the channels of a pixel side by side
    filtered = np.empty((n_rows, scanlines.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up: each byte minus the byte above it, modulo 256
    filtered[0, 1:] = scanlines[0]
    np.subtract(scanlines[1:], scanlines[:-1], out=filtered[1:, 1:])
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = compressor.compress(filtered.data) + compressor.flush()
    colour_type = 2 if rgb else 0  # RGB or grey, 8 bits a channel
    header = struct.pack(">IIBBBBB", n_cols, n_rows, 8, colour_type, 0, 0, 0)
    chunks = (_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", data), _png_chunk(b"IEND", b""))
    return _PNG_SIGNATURE + b"".join(chunks)


def slice_grey(image: np.ndarray) -> np.ndarray:
    """The slice's own grey levels of a dataset image array: a 2-D image itself; of
    (rows, cols, channels) the middle channel (a slab's slice; any channel of a grey image
    repeated to the model's channels)."""
    image = np.asarray(image)
    return image if image.ndim == 2 else image[..., image.shape[-1] // 2]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
