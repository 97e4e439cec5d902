"""`atelier models list | pull NAME... | rm NAME...`: each preset's files, fetched from the hub or removed."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from huggingface_hub import constants

from engine.config import Settings
from engine.runtime.model_files import HUB_KINDS, PresetFiles, Source, human, preset_files, stored_presets
from engine.runtime.model_hub import Hub, HubError
from engine.runtime.model_ops import pull, remove


async def _stored(settings: Settings) -> list[tuple[str, dict]]:
    from engine.store import open_store

    store = await open_store(settings)
    try:
        return await stored_presets(store)
    finally:
        await store.close()


def run_models(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of `atelier models`."""
    stored = asyncio.run(_stored(settings))
    if args.models_command == "list":
        return _list(settings, stored, args)
    wanted = [n.strip().lower() for n in args.names]
    unknown = [n for n in wanted if n not in {d["name"] for _, d in stored}]
    if unknown:
        known = ", ".join(sorted({d["name"] for _, d in stored}))
        print(
            f"atelier models {args.models_command}: no preset named {', '.join(unknown)}; known: {known}",
            file=sys.stderr,
        )
        return 2
    chosen = [(k, d) for n in wanted for k, d in stored if d["name"] == n]
    if args.models_command == "pull":
        return _pull(settings, chosen)
    return _rm(settings, chosen, stored)


def _file_line(f_name: str, size: int | None, present: bool, partial: int) -> str:
    state = "present" if present else "missing"
    more = f"  ({human(partial)} downloaded, a pull resumes there)" if partial else ""
    return f"      {state:8} {human(size):>13}  {f_name}{more}"


def _source_lines(src: Source) -> list[str]:
    shared = ", shared" if src.shared and src.kind in HUB_KINDS else ""
    where = {"hub-repo": "hub repo", "hub-file": "hub file in"}.get(src.kind, src.kind)
    head = f"    {src.role:15} {where} {src.ref}{shared}"
    if src.kind == "hub-file":
        f = src.files[0]
        head += f": {f.name}: {'present' if f.present else 'missing'}, {human(f.size)}"
        head += f" ({src.note})" if src.note and f.size is None else ""
        return [head + (f", {human(f.partial)} downloaded (a pull resumes there)" if f.partial else "")]
    if src.kind == "hub-repo" and src.files:
        todo = src.missing_bytes
        head += f": {len(src.files)} files, {human(src.size)}" + (
            f", {human(todo)} to download" if todo else ""
        )
        head += f"; {src.note}" if src.note else ""
        return [head] + [_file_line(f.name, f.size, f.present, f.partial) for f in src.files]
    if src.kind in ("local", "pkg", "chunks") and src.files:
        head += f" ({human(src.size)})"
    return [head + (f": {src.note}" if src.note else "")]


def render_preset(pf: PresetFiles) -> list[str]:
    """The text lines for one preset in `atelier models list`."""
    todo = pf.missing_bytes
    size = "" if pf.ready else f", {human(todo)} to download" if todo else ""
    lines = [f"  {pf.name} [{pf.state}{size}]" + (f"  {pf.description}" if pf.description else "")]
    for src in pf.sources:
        lines += _source_lines(src)
    lines += [f"    fix: {fix}" for fix in pf.fixes]
    return lines


def _list(settings: Settings, stored: list[tuple[str, dict]], args: argparse.Namespace) -> int:
    hub = Hub(offline=args.offline)
    files = [preset_files(kind, data, settings, hub) for kind, data in stored]
    caches = {"hub": constants.HF_HUB_CACHE, "llm": str(settings.path("models"))}
    if args.json:
        reach = False if hub.down and not args.offline else (True if hub.answered else None)
        info = {"endpoint": hub.endpoint, "reachable": reach, "error": hub.down}
        print(json.dumps({"hub": info, "caches": caches, "presets": [f.to_json() for f in files]}, indent=2))
        return 0
    print(
        f"hub: {hub.endpoint}"
        + (f" - {hub.down}: sizes of files not downloaded are unknown" if hub.down else "")
    )
    print(f"caches: image models and the safety checker in {caches['hub']}; LLM files in {caches['llm']}")
    for kind in ("image", "llm"):
        print(f"\n{kind} presets")
        for pf in (f for f in files if f.kind == kind):
            print("\n".join(render_preset(pf)))
    return 0


def _pull(settings: Settings, chosen: list[tuple[str, dict]]) -> int:
    status = 0
    for kind, data in chosen:
        pf = preset_files(kind, data, settings)
        try:
            result = pull(pf)
        except HubError as e:
            print(f"atelier models pull {pf.name}: {e}", file=sys.stderr)
            return 1
        for note in result.notes:
            print(f"{pf.name}: {note}")
        got = f"downloaded {len(result.fetched)} files ({human(result.bytes)})"
        print(f"{pf.name}: {got}, {len(result.present)} already present")
        after = preset_files(kind, data, settings)
        if after.ready:
            print(f"{pf.name}: ready")
        else:
            status = 1
            print(f"{pf.name}: still not ready: {'; '.join(after.fixes) or after.state}", file=sys.stderr)
    return status


def _rm(settings: Settings, chosen: list[tuple[str, dict]], stored: list[tuple[str, dict]]) -> int:
    everything = [preset_files(kind, data, settings) for kind, data in stored]
    for kind, data in chosen:
        pf = next(p for p in everything if (p.kind, p.name) == (kind, data["name"]))
        result = remove(pf, everything, settings)
        for line in result.removed:
            print(f"{pf.name}: removed {line}")
        for line in result.kept:
            print(f"{pf.name}: kept {line}")
        print(f"{pf.name}: freed {human(result.freed)} ({result.freed} bytes)")
        everything = [preset_files(kind, data, settings) for kind, data in stored]
    return 0
