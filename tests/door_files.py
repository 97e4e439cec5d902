"""The files a user may attach: the bad ones from the field report, and good ones, built in memory."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression-bomb shape) with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose screen and first frame claim width x height."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return head + frame + b"\x3b"


def encoded(fmt: str, size: tuple[int, int] = (40, 30), color=(200, 80, 40)) -> bytes:
    """A real image in `fmt` (PNG, JPEG, WEBP, BMP...)."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def truncated_png() -> bytes:
    """A real PNG cut off half way."""
    data = encoded("PNG", (64, 64))
    return data[: len(data) // 2]


def big_bmp(mb: int = 24) -> bytes:
    """A BMP file of about `mb` megabytes."""
    side = int((mb * 2**20 / 3) ** 0.5)
    return encoded("BMP", (side, side))


# (file name, bytes, content type, words the answer must contain)
BAD = [
    ("huge.bmp", None, "image/bmp", "too large"),
    ("bomb.png", png_claiming(50_000, 50_000), "image/png", "claims 2500 MP, over the 16.8 MP limit"),
    ("empty.png", b"", "image/png", "empty file"),
    ("frame.gif", gif_claiming(65535, 65535), "image/gif", "claims 4294.8 MP"),
    ("script.png", b"#!/bin/sh\necho pwned\n", "image/png", "not an image"),
    ("cut.png", truncated_png(), "image/png", "truncated"),
]
GOOD = [
    ("photo.webp", encoded("WEBP"), "image/webp"),
    ("photo.png", encoded("JPEG"), "image/png"),  # a JPEG named .png is a JPEG
]
