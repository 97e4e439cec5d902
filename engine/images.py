"""Safe image decoding: every untrusted image passes through here before any model sees it."""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import warnings
from collections.abc import Iterable

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.config import Images

_DEFAULTS = Images()
DEFAULT_MAX_BYTES = _DEFAULTS.max_input_bytes
DEFAULT_MAX_PIXELS = _DEFAULTS.max_input_pixels
DEFAULT_FORMATS: tuple[str, ...] = _DEFAULTS.formats
# PIL reports some camera JPEGs (multi-picture) as MPO; they are JPEG files for our purposes.
_ALIASES = {"MPO": "JPEG", "JPG": "JPEG"}
_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,"
)
_CORRUPT = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, TypeError)


class BadImage(ValueError):
    """An image we refuse to decode; the message says why in plain words."""


def image_limits(images: Images) -> dict:
    """The keyword limits for decode_image taken from settings.images."""
    return {
        "max_bytes": images.max_input_bytes,
        "max_pixels": images.max_input_pixels,
        "formats": images.formats,
    }


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}".removesuffix(".0")


def _mp(n: int) -> str:
    return f"{n / 1e6:.1f}".removesuffix(".0")


def _fmt_list(formats: Iterable[str]) -> str:
    return "/".join(formats)


def _bomb(error: Exception, max_pixels: int) -> str:
    """A decompression bomb in words: how many pixels it claims and the limit."""
    m = re.search(r"\((\d+) pixels\)", str(error))
    claimed = f"claims {_mp(int(m.group(1)))} MP" if m else "claims too many pixels"
    return f"the image {claimed}, over the {_mp(max_pixels)} MP limit (a decompression bomb?)"


def _check_header(img: Image.Image, max_pixels: int, formats: tuple[str, ...]) -> None:
    """Format and dimension checks that need only the header."""
    fmt = _ALIASES.get(img.format or "", img.format or "unknown")
    if fmt not in formats:
        raise BadImage(f"{fmt} images are not accepted; {_fmt_list(formats)} only")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise BadImage(f"image has impossible dimensions {w}x{h}")
    if w * h > max_pixels:
        raise BadImage(f"{w}x{h} is over the {_mp(max_pixels)} MP limit")


def _open(data: bytes, max_pixels: int, formats: tuple[str, ...]) -> Image.Image:
    """Open the header only (no pixel data) with PIL's bomb protection raised as BadImage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(_bomb(e, max_pixels)) from None
    except UnidentifiedImageError:
        raise BadImage(f"not an image, or not one of {_fmt_list(formats)}") from None
    except _CORRUPT as e:
        raise BadImage(f"image header is corrupt: {e}") from None
    _check_header(img, max_pixels, formats)
    return img


def _flatten(img: Image.Image) -> Image.Image:
    """First frame as RGB; transparency is composited over white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Iterable[str] = DEFAULT_FORMATS,
) -> Image.Image:
    """Decode untrusted bytes into an RGB image (first frame), or raise BadImage saying why."""
    formats = tuple(f.upper() for f in formats)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadImage(f"image data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BadImage("empty file; not an image")
    if len(data) > max_bytes:
        raise BadImage(f"image is {_mb(len(data))} MB; the limit is {_mb(max_bytes)} MB")
    probe = _open(data, max_pixels, formats)
    try:
        probe.verify()
    except _CORRUPT as e:
        raise BadImage(f"image data is corrupt or truncated ({e})") from None
    img = _open(data, max_pixels, formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.seek(0)
            img.load()
            return _flatten(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(_bomb(e, max_pixels)) from None
    except _CORRUPT as e:
        raise BadImage(f"image data is corrupt or truncated ({e})") from None


def decode_data_uri(uri: str, *, max_bytes: int = DEFAULT_MAX_BYTES, **limits) -> Image.Image:
    """Decode a base64 `data:image/...` URI through decode_image; anything else is a BadImage."""
    if not isinstance(uri, str):
        raise BadImage(f"image URL must be a string, not {type(uri).__name__}")
    m = _DATA_URI.match(uri)
    if m is None:
        head = uri[:40] + ("..." if len(uri) > 40 else "")
        raise BadImage(f"only data: URIs are accepted for images, got {head!r}")
    if not m.group("b64"):
        raise BadImage("image data URI must be base64-encoded (';base64,')")
    payload = uri[m.end() :]
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise BadImage(f"image is {_mb(len(payload) * 3 // 4)} MB; the limit is {_mb(max_bytes)} MB")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("image data URI is not valid base64") from None
    return decode_image(data, max_bytes=max_bytes, **limits)


def to_data_uri(img: Image.Image, *, max_side: int = 1024, fmt: str = "PNG", quality: int = 90) -> str:
    """Encode an image as a PNG or JPEG data URI, downscaled so its longest side is <= max_side."""
    fmt = fmt.upper()
    if fmt not in ("PNG", "JPEG"):
        raise ValueError(f"data URIs are built as PNG or JPEG, not {fmt}")
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    img = img.convert("RGB")
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {"optimize": False}))
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
