"""`atelier check determinism PRESET`: render one request twice and compare checksums (exit 1 on a mismatch)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from engine.config import Settings


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """Register the `check` subcommand."""
    p = sub.add_parser("check", help="checks that render images: determinism")
    csub = p.add_subparsers(dest="check", required=True)
    det = csub.add_parser("determinism", help="render the same request twice and compare checksums")
    det.add_argument("preset", metavar="PRESET", help="the image preset to check")
    det.add_argument("--demo", action="store_true", help="with the offline test models (preset 'demo')")
    det.add_argument("--prompt", default="a lighthouse on a cliff", help="the prompt to render")
    det.add_argument("--seed", type=int, default=1234, help="the seed both renders use")
    det.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's)")


async def _determinism(settings: Settings, args: argparse.Namespace) -> int:
    from engine.core import Engine
    from engine.jobs.determinism import check_determinism
    from engine.runtime.diffusion.errors import InvalidRequest
    from engine.runtime.managed import ModelNotAvailable
    from engine.store.library import UnknownEntry

    engine = await Engine.start(settings, demo=args.demo, worker=False)
    try:
        report = await check_determinism(
            engine.store, engine.models, engine.arbiter, settings, args.preset,
            prompt=args.prompt, seed=args.seed, steps=args.steps,
        )  # fmt: skip
    except (UnknownEntry, InvalidRequest, ModelNotAvailable) as e:
        print(f"atelier check determinism: {e}", file=sys.stderr)
        return 2
    finally:
        await engine.stop()
    print(report.text())
    return 0 if report.same else 1


def run_check(settings: Settings, args: argparse.Namespace) -> int:
    """Run `atelier check ...`."""
    return asyncio.run(_determinism(settings, args))
