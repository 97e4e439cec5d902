"""Agent evaluation: does the agent call the right tool with the right arguments? (bench/agent_cases.jsonl)

python -m bench.agent_eval [--model smollm2-135m|qwen2.5-coder-0.5b] [--cases FILE] [--only ID_PREFIX]
                           [--no-rules] [--threads 2] [--verbose]

Each case runs the same Agent the fronts use, in a fresh conversation (plus the case's own earlier messages),
against a scratch store holding the evaluation user's six earlier images. Jobs are queued, not rendered.
Prints ONE JSON line: right-tool %, arguments-right % (over right-tool cases that call a tool), invalid-action %,
turns that hit a limit, context-window errors, repeated calls, p50/p99 turn latency and tokens evaluated per turn.
The case file format is documented in bench/eval_cases.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.eval_cases import CASES_FILE, Case, load_cases, score_args
from bench.eval_env import EvalEnv, open_env

LIMIT_STOPS = ("max_tool_calls", "max_wall_s", "repeat")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def first_tool(result) -> str:
    """The first tool the agent tried in the turn (run or rejected), else its route (reply / explain)."""
    for call in result.tool_calls:
        return call.name
    return result.route or "reply"


def invalid(result) -> bool:
    """True when a model answer was unusable or a call was rejected for its arguments."""
    bad_step = any(s.get("error") for s in result.steps if "call" not in s)
    bad_call = any(not c.executed and "invalid arguments" in (c.error or "") for c in result.tool_calls)
    return bad_step or bad_call


def repeated(result) -> int:
    """Identical tool calls run more than once in the turn (must be 0)."""
    keys = [s["key"] for s in result.steps if "call" in s]
    return len(keys) - len(set(keys))


async def run_case(env: EvalEnv, case: Case) -> dict:
    """One case through the agent: what it did and how it scored."""
    turn = env.turn(case)
    t0 = time.perf_counter()
    result = await env.agent.run(turn)
    ms = (time.perf_counter() - t0) * 1000
    tool = first_tool(result)
    call = result.tool_calls[0] if result.tool_calls else None
    right = tool == case.tool
    problems = score_args(case, call.args if call else {}, env.replied_id) if right and call else []
    return {
        "id": case.id,
        "tool": tool,
        "expected": case.tool,
        "right": right,
        "args_right": right and not problems,
        "scored_args": right and case.tool not in ("reply", "explain"),
        "problems": problems,
        "invalid": invalid(result),
        "stopped": result.stopped,
        "context_error": result.stopped == "context" or "context window" in (result.reply or ""),
        "repeated": repeated(result),
        "ms": ms,
        "tokens": result.prompt_tokens,
        "by": result.decided_by,
        "args": {k: v for k, v in (call.args if call else {}).items() if v not in (None, "", 1, 5)},
    }


def summarize(rows: list[dict], model: str, rules: bool, cases_file: str) -> dict:
    """The one-line report."""
    n = len(rows)
    right = [r for r in rows if r["right"]]
    scored = [r for r in right if r["scored_args"]]
    by_tool: dict[str, dict[str, int]] = {}
    for r in rows:
        t = by_tool.setdefault(r["expected"], {"n": 0, "right_tool": 0, "args_right": 0})
        t["n"] += 1
        t["right_tool"] += r["right"]
        t["args_right"] += r["args_right"] and r["scored_args"]
    lat = [r["ms"] for r in rows]
    pct = lambda k, of: round(100 * k / of, 1) if of else 0.0  # noqa: E731
    return {
        "bench": "agent_eval",
        "model": model,
        "rules": rules,
        "cases_file": cases_file,
        "cases": n,
        "right_tool_pct": pct(len(right), n),
        "args_right_pct": pct(sum(r["args_right"] for r in scored), len(scored)),
        "invalid_action_pct": pct(sum(r["invalid"] for r in rows), n),
        "limit_turns": sum(r["stopped"] in LIMIT_STOPS for r in rows),
        "context_errors": sum(r["context_error"] for r in rows),
        "repeated_calls": sum(r["repeated"] for r in rows),
        "decided_by_model_pct": pct(sum(r["by"] == "model" for r in rows), n),
        "p50_ms": round(percentile(lat, 50), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "mean_ms": round(statistics.fmean(lat), 1) if lat else 0.0,
        "tokens_evaluated_per_turn": round(statistics.fmean(r["tokens"] for r in rows), 1) if rows else 0.0,
        "by_tool": by_tool,
        "loadavg_start": round(os.getloadavg()[0], 2),
        "wrong": [r["id"] for r in rows if not r["args_right"] and r["expected"] not in ("reply",)][:80],
    }


async def main_async(args: argparse.Namespace) -> dict:
    cases = load_cases(Path(args.cases))
    if args.only:
        cases = [c for c in cases if c.id.startswith(tuple(args.only.split(",")))]
    with tempfile.TemporaryDirectory(prefix="atelier-eval-") as tmp:
        async with open_env(Path(tmp), args.model, threads=args.threads, rules=not args.no_rules) as env:
            rows = []
            for case in cases:
                row = await run_case(env, case)
                rows.append(row)
                if args.verbose:
                    mark = "ok " if row["args_right"] else ("TOOL" if not row["right"] else "ARGS")
                    print(f"{mark} {case.id:10} {row['ms']:7.0f} ms {row['tool']:15} {row['args']} "
                          f"{row['problems'] or ''} | {case.text[:70]}", file=sys.stderr)  # fmt: skip
    return summarize(rows, args.model, not args.no_rules, str(args.cases))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="LLM preset name")
    ap.add_argument("--cases", default=str(CASES_FILE))
    ap.add_argument("--only", default="", help="comma-separated id prefixes")
    ap.add_argument("--no-rules", action="store_true", help="the model picks every route (no pre-router)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verbose", action="store_true", help="one line per case on stderr")
    print(json.dumps(asyncio.run(main_async(ap.parse_args()))))


if __name__ == "__main__":
    main()
