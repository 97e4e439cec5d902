"""PNG output with A1111-style "parameters" text plus a JSON "atelier" chunk, and a reader for both."""

from __future__ import annotations

import json
import re
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from PIL import Image, PngImagePlugin

_KV = re.compile(r"\s*([\w ]+):\s*([^,]+)(?:,|$)")
# zlib level 4 with the Z_RLE strategy (libpng's advice for photographs) over Pillow's level 6 with the default
# strategy: seven 1024² photographs (skimage's samples) encoded in 62-82 ms instead of 214-417 ms on our CPU, and
# 0-5 % smaller than level 4 with the default strategy (115-193 ms)
COMPRESS_LEVEL = 4
Z_RLE = 3  # zlib's strategy constant, Pillow's compress_type


def parameters_line(meta: dict[str, Any]) -> str:
    """The A1111 "parameters" text: prompt, optional "Negative prompt:" line, then "Key: value, ..."."""
    lines = [str(meta.get("prompt", ""))]
    if meta.get("negative"):
        lines.append(f"Negative prompt: {meta['negative']}")
    p = meta.get("params", {})
    kv = [
        ("Steps", p.get("steps")),
        ("Sampler", p.get("scheduler")),
        ("CFG scale", p.get("cfg")),
        ("Seed", meta.get("seed")),
        ("Size", f"{p['width']}x{p['height']}" if "width" in p and "height" in p else None),
        ("Model", meta.get("model")),
        ("Denoising strength", p.get("strength") if p.get("mode") in ("img2img", "inpaint") else None),
    ]
    lines.append(", ".join(f"{k}: {str(v).replace(',', ' ')}" for k, v in kv if v is not None))
    return "\n".join(lines)


def png_bytes(image: Image.Image, meta: dict[str, Any]) -> bytes:
    """Encode `image` as PNG with "parameters" and "atelier" (JSON of `meta`) text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters_line(meta))
    info.add_text("atelier", json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str))
    buf = BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=COMPRESS_LEVEL, compress_type=Z_RLE)
    return buf.getvalue()


def save_png(image: Image.Image, dest: str | Path | IO[bytes], meta: dict[str, Any]) -> None:
    """Write the PNG to a path or a binary file object."""
    data = png_bytes(image, meta)
    if isinstance(dest, str | Path):
        Path(dest).write_bytes(data)
    else:
        dest.write(data)


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse an A1111 "parameters" text into {prompt, negative, <Key>: value}."""
    lines = text.split("\n")
    out: dict[str, Any] = {"prompt": "", "negative": ""}
    tail = lines.pop() if len(lines) > 1 or ": " in lines[-1] else ""
    neg = [i for i, ln in enumerate(lines) if ln.startswith("Negative prompt: ")]
    if neg:
        out["negative"] = "\n".join(lines[neg[0] :])[len("Negative prompt: ") :]
        lines = lines[: neg[0]]
    out["prompt"] = "\n".join(lines)
    for key, value in _KV.findall(tail):
        out[key.strip()] = value.strip()
    return out


def read_png_meta(src: str | Path | IO[bytes] | bytes) -> dict[str, Any]:
    """Return {"atelier": dict|None, "parameters": dict|None} from a PNG written by save_png (or A1111)."""
    if isinstance(src, bytes):
        src = BytesIO(src)
    with Image.open(src) as im:
        text = dict(getattr(im, "text", {}) or {})
    raw = text.get("atelier")
    return {
        "atelier": json.loads(raw) if raw else None,
        "parameters": parse_parameters(text["parameters"]) if "parameters" in text else None,
    }
