"""engine.images: untrusted bytes become an RGB image or a BadImage with a specific message."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

import pytest
from PIL import Image

from engine.config import Images
from engine.images import BadImage, decode_data_uri, decode_image, image_limits, to_data_uri


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny (wrong) IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def test_good_png_decodes_to_rgb():
    src = Image.new("RGBA", (40, 30), (255, 0, 0, 255))
    src.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent -> white
    img = decode_image(encode(src, "PNG"))
    assert img.mode == "RGB" and img.size == (40, 30)
    assert img.getpixel((5, 5)) == (255, 0, 0)
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    img = decode_image(buf.getvalue())
    assert img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50


def test_jpeg_and_webp_accepted():
    src = Image.new("RGB", (32, 32), (10, 200, 30))
    for fmt in ("JPEG", "WEBP"):
        assert decode_image(encode(src, fmt)).size == (32, 32)


def test_oversized_bytes_rejected_with_sizes():
    data = encode(Image.new("RGB", (8, 8)), "PNG") + b"\0" * (3 * 2**20)
    with pytest.raises(BadImage, match=r"^image is 3 MB; the limit is 2 MB$"):
        decode_image(data, max_bytes=2 * 2**20)


def test_claimed_dimensions_over_our_limit():
    with pytest.raises(BadImage, match=r"^9000x9000 is over the 16.8 MP limit$"):
        decode_image(png_header_claiming(9000, 9000), max_pixels=4096 * 4096)


def test_pil_decompression_bomb_becomes_bad_image():
    with pytest.raises(BadImage, match=r"over the 16.8 MP limit"):
        decode_image(png_header_claiming(100_000, 100_000), max_pixels=4096 * 4096)


def test_truncated_file_rejected():
    data = encode(Image.effect_noise((64, 64), 40).convert("RGB"), "PNG")
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])
    jpeg = encode(Image.effect_noise((64, 64), 40).convert("RGB"), "JPEG")
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode_image(jpeg[: len(jpeg) // 2])


def test_wrong_format_names_the_allowed_ones():
    bmp = encode(Image.new("RGB", (8, 8)), "BMP")
    with pytest.raises(BadImage, match=r"^BMP images are not accepted; PNG/JPEG/WEBP/GIF only$"):
        decode_image(bmp)
    gif = encode(Image.new("RGB", (8, 8)), "GIF")
    with pytest.raises(BadImage, match=r"^GIF images are not accepted; PNG/JPEG only$"):
        decode_image(gif, formats=("PNG", "JPEG"))


def test_random_bytes_and_empty_are_not_images():
    with pytest.raises(BadImage, match="not an image"):
        decode_image(os.urandom(4096))
    with pytest.raises(BadImage, match="empty file"):
        decode_image(b"")
    with pytest.raises(BadImage, match="must be bytes"):
        decode_image("not bytes")  # type: ignore[arg-type]


def test_limits_come_from_settings():
    limits = image_limits(Images(max_input_bytes=100, max_input_pixels=10, formats=("PNG",)))
    assert limits == {"max_bytes": 100, "max_pixels": 10, "formats": ("PNG",)}
    with pytest.raises(BadImage, match="limit is"):
        decode_image(encode(Image.effect_noise((64, 64), 40), "PNG"), **limits)


def test_to_data_uri_downscales_and_round_trips():
    img = Image.new("RGB", (300, 120), (0, 128, 255))
    uri = to_data_uri(img, max_side=100)
    assert uri.startswith("data:image/png;base64,")
    back = decode_data_uri(uri)
    assert back.size == (100, 40)
    assert back.getpixel((50, 20)) == (0, 128, 255)
    jpeg = to_data_uri(img, max_side=400, fmt="JPEG")
    assert jpeg.startswith("data:image/jpeg;base64,")
    assert decode_data_uri(jpeg).size == (300, 120)
    with pytest.raises(ValueError, match="PNG or JPEG"):
        to_data_uri(img, fmt="GIF")


def test_data_uri_rejections():
    with pytest.raises(BadImage, match="only data: URIs"):
        decode_data_uri("http://example.com/cat.png")
    with pytest.raises(BadImage, match="base64-encoded"):
        decode_data_uri("data:image/png,rawbytes")
    with pytest.raises(BadImage, match="not valid base64"):
        decode_data_uri("data:image/png;base64,@@@@")
    big = "data:image/png;base64," + base64.b64encode(b"\0" * 4000).decode()
    with pytest.raises(BadImage, match=r"limit is"):
        decode_data_uri(big, max_bytes=1000)
