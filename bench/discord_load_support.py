"""Pieces of bench.discord_load: a fake Discord that times first responses, a scripted agent, the summary."""

from __future__ import annotations

import collections
import re
import time
from typing import Any

from aiohttp import web

from bench.soak_support import SoakFake
from bot.agent_result import AgentResult
from bot.conversation import Turn

CALLBACK = re.compile(r"/interactions/(?P<iid>\d+)/[^/]+/callback")
TYPING = re.compile(r"/channels/(?P<cid>\d+)/typing")
CHANNEL_BASE = 8_000_000
DEADLINE_S = 3.0  # Discord drops an interaction not acknowledged within 3 s


class LoadFake(SoakFake):
    """SoakFake with one text channel per user; times each event from its dispatch to the bot's first
    response (interaction callback; typing or reply for a message), taken when the request reaches the fake."""

    def __init__(self, n_users: int) -> None:
        super().__init__(n_users)
        self.channels = {int(u["id"]): CHANNEL_BASE + i for i, u in enumerate(self.people)}
        self.sent: dict[int, float] = {}  # event key -> perf_counter at dispatch
        self.first: dict[int, float] = {}  # event key -> perf_counter of the first response
        self.pending: dict[int, collections.deque[int]] = collections.defaultdict(collections.deque)

    def channel_payload(self, cid: int | None = None) -> dict:
        """A guild text channel (the shared one by default)."""
        cid = cid or self.channel_id
        return {"id": str(cid), "type": 0, "name": f"c{cid}", "position": 0, "guild_id": str(self.guild_id),
                "permission_overwrites": [], "nsfw": False}  # fmt: skip

    def guild_payload(self) -> dict:
        """The guild with every user and every user's channel."""
        g = super().guild_payload()
        g["channels"] = [self.channel_payload(), *(self.channel_payload(c) for c in self.channels.values())]
        return g

    def mention(self, who: dict, text: str) -> dict:
        """A message that mentions the bot, in the author's own channel."""
        m = self.message(who, f"<@{self.bot_user['id']}> {text}", mentions=[self.bot_user])
        m["channel_id"] = str(self.channels[int(who["id"])])
        return m

    async def send(self, event: str, payload: dict) -> int:
        """Dispatch one gateway event, noting when; returns its key (interaction or message id)."""
        key = int(payload["id"])
        if event == "MESSAGE_CREATE":
            self.pending[int(payload["channel_id"])].append(key)
        self.sent[key] = time.perf_counter()
        await self.dispatch(event, payload)
        return key

    def _answered(self, key: int, at: float) -> None:
        if key in self.sent and key not in self.first:
            self.first[key] = at

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        at, path = time.perf_counter(), "/" + request.match_info["tail"]
        if m := CALLBACK.fullmatch(path):
            self._answered(int(m["iid"]), at)
        elif (m := TYPING.fullmatch(path)) and (queue := self.pending[int(m["cid"])]):
            self._answered(queue.popleft(), at)
        resp = await super()._rest(request)
        call = self.calls[-1] if self.calls else None
        ref = (call.body.get("message_reference") or {}).get("message_id") if call else None
        if call is not None and call.method == "POST" and ref and int(ref) not in self.first:
            self._answered(int(ref), at)  # a reply before any typing (e.g. an empty mention)
            queue = self.pending[int(call.path.split("/")[2])]
            if int(ref) in queue:
                queue.remove(int(ref))
        return resp


class ScriptedLoadAgent:
    """An agent without a model: 'draw …' submits a generate job; anything else gets a short reply."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.turns = 0

    async def run(self, turn: Turn) -> AgentResult:
        """One turn, the way the real agent's rules route a plain drawing request."""
        self.turns += 1
        text = turn.text.strip()
        if not text.lower().startswith("draw "):
            return AgentResult(reply="I draw pictures: try “draw a fox in the snow”.", route="chat")
        job = await self.services.submit(
            "generate", {"prompt": text[5:]}, user_id=turn.user_id, guild_id=turn.guild_id,
            channel_id=turn.channel_id, reply_to=dict(turn.reply_to),
        )  # fmt: skip
        return AgentResult(reply="Drawing it.", job_ids=[job], route="generate")


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of values, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def response_summary(fake: LoadFake, kinds: dict[int, str]) -> dict[str, Any]:
    """First-response times (ms) overall and per kind, and interactions that missed the 3 s deadline."""
    ms = {k: (fake.first[k] - fake.sent[k]) * 1000 for k in fake.sent if k in fake.first}
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    for k, v in ms.items():
        by_kind[kinds[k]].append(v)
    interactions = [k for k, kind in kinds.items() if not kind.startswith("mention")]
    late = [k for k in interactions if k not in ms or ms[k] > DEADLINE_S * 1000]
    rnd = lambda x: None if x is None else round(x, 1)  # noqa: E731
    return {
        "first_response_p50_ms": rnd(percentile(list(ms.values()), 0.5)),
        "first_response_p99_ms": rnd(percentile(list(ms.values()), 0.99)),
        "first_response_max_ms": rnd(max(ms.values(), default=None)),
        "first_response_p99_ms_by_kind": {k: rnd(percentile(v, 0.99)) for k, v in sorted(by_kind.items())},
        "interactions": len(interactions), "failed_interactions": len(late),
        "unanswered_events": len(fake.sent) - len(ms),
    }  # fmt: skip


def delivery_summary(rows: list[Any], fake: LoadFake) -> dict[str, Any]:
    """Jobs submitted, delivered (one final post each), failed with a message, lost, and duplicates."""
    delivered = failed = 0
    lost, dups = [], []
    for jid, state, _posted, _kind, _error in rows:
        posts = fake.final_posts.get(jid, [])
        outcomes = [p[0] for p in posts]
        if len(posts) > 1:
            dups.append(jid)
        if state == "done" and "done" in outcomes:
            delivered += 1
        elif state in ("failed", "cancelled") and outcomes:
            failed += 1
        else:
            lost.append(jid)
    return {
        "jobs_submitted": len(rows), "jobs_delivered": delivered, "jobs_failed_with_message": failed,
        "jobs_lost": len(lost), "duplicate_deliveries": len(dups), "lost_jobs": lost[:10],
        "duplicate_jobs": dups[:10], "job_states": dict(collections.Counter(r[1] for r in rows)),
        "every_job_delivered_once": not lost and not dups,
    }  # fmt: skip


def settled(rows: list[Any], fake: LoadFake) -> bool:
    """Every job final with its message posted, and every event answered."""
    jobs_ok = all(r[1] in ("done", "failed", "cancelled") and fake.final_posts.get(r[0]) for r in rows)
    return jobs_ok and set(fake.sent) <= set(fake.first)
