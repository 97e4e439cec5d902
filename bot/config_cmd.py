"""`atelier config`: explain every settings key, show the effective settings, render the README table."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from engine.config import REPO_CONFIG, ConfigError, Settings, load_settings
from engine.config_doc import KeyDoc, key_docs, readme_table

README = REPO_CONFIG.parent / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"
DEFAULT_WIDTH = 30  # longer defaults are cut in the text listing (--json has them whole)
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:]*):[^/@]*@")


def add_arguments(p: argparse.ArgumentParser, *, with_write: bool = False) -> None:
    """The options of `atelier config`; with_write adds --write-readme (`python -m bot.config_cmd`)."""
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--explain", action="store_true", help="every key: type, default and what it does")
    what.add_argument("--show", action="store_true", help="the effective settings of the config file (JSON)")
    what.add_argument("--readme", action="store_true", help="the README's configuration table (Markdown)")
    if with_write:
        what.add_argument("--write-readme", action="store_true", help=f"regenerate the table in {README}")
    p.add_argument("--json", action="store_true", help="with --explain: a JSON list of objects")


def _default_text(doc: KeyDoc) -> str:
    text = "required" if doc.required else json.dumps(doc.default, ensure_ascii=False)
    return text if len(text) <= DEFAULT_WIDTH else text[: DEFAULT_WIDTH - 1] + "…"


def explain_text() -> str:
    """Aligned lines: `section.key  type  default  description`."""
    rows = [(d.key, d.type, _default_text(d), d.description) for d in key_docs()]
    kw, tw, dw = (max(len(r[i]) for r in rows) for i in range(3))
    return "\n".join(f"{k:<{kw}}  {t:<{tw}}  {d:<{dw}}  {text}" for k, t, d, text in rows)


def explain_json() -> str:
    """Every key as {key, type, default, description, required}."""
    return json.dumps([d.as_dict() for d in key_docs()], indent=2, ensure_ascii=False)


def redact(value: object) -> object:
    """The value with passwords inside URLs (redis://user:secret@host) replaced by ***."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1:***@", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def show_json(settings: Settings) -> str:
    """The merged settings as JSON: no token (env-only), no base_dir, URL passwords masked."""
    return json.dumps(redact(settings.model_dump(mode="json")), indent=2, ensure_ascii=False)


def readme_block(text: str) -> str:
    """The text between the config-table markers of a README."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} block")
    return text[start + len(START) : end].strip("\n")


def write_readme(path: Path = README) -> bool:
    """Regenerate the README's configuration table in place; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    old = readme_block(text)
    if old == readme_table():
        return False
    start = text.index(START) + len(START)
    path.write_text(text[:start] + "\n" + readme_table() + "\n" + text[text.index(END) :], encoding="utf-8")
    return True


def run_config(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier config --explain [--json] | --show | --readme`."""
    if args.show:
        print(show_json(settings))
    elif args.readme:
        print(readme_table())
    else:
        print(explain_json() if args.json else explain_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.config_cmd --write-readme` (or any `atelier config` option)."""
    p = argparse.ArgumentParser(prog="python -m bot.config_cmd", description=__doc__)
    add_arguments(p, with_write=True)
    p.add_argument("--config", metavar="PATH", help="config file for --show")
    args = p.parse_args(argv)
    if args.write_readme:
        try:
            print(f"{README}: {'updated' if write_readme() else 'already up to date'}")
        except ValueError as e:
            print(f"{README}: {e}", file=sys.stderr)
            return 1
        return 0
    try:
        settings = load_settings(args.config) if args.show else Settings()
    except ConfigError as e:
        print(f"atelier: configuration error\n{e}", file=sys.stderr)
        return 2
    return run_config(settings, args)


if __name__ == "__main__":
    sys.exit(main())
