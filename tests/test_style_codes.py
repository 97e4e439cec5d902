"""Style codes: the store, the use-cases, expansion at submission, the chat paths and a real generation."""

from __future__ import annotations

import pytest

from bot.chat import TerminalChat
from bot.chat_commands import parse_imagine
from bot.usecases import account, style_codes
from bot.usecases.errors import UserError
from engine.jobs.policy import Requester
from engine.jobs.submit import JobSubmitter
from engine.runtime.diffusion.errors import InvalidRequest
from engine.store.history import Scope
from engine.store.style_codes import ALPHABET, MalformedCode, StyleCodes, UnknownCode, normalize
from tests.agent_support import ALICE, BOB, GUILD, make_settings, seed_env
from tests.test_generate import run, settings, start  # noqa: F401  (fixtures of the real tiny pipeline)
from tests.test_understand import facts
from tools.orchestrator import Orchestrator

OTHER_GUILD, CAROL = 88, 3003
HIDDEN = "is unknown or not shared with you"


class Services:
    """The slice of Engine the use-cases touch: store and settings."""

    def __init__(self, env):
        self.store, self.settings = env.store, env.settings


@pytest.fixture
async def env(open_store, tmp_path):
    e = await seed_env(await open_store(), make_settings(tmp_path))
    await e.store.library.add(
        "inky", "style", "{prompt}, ink wash", negative="colour", guild_id=GUILD, author_id=ALICE
    )
    return e


def code_of(text: str) -> str:
    """The code in a create answer ("Style code **X7K2** → ...")."""
    return text.split("**")[1]


def submitter(env) -> JobSubmitter:
    return JobSubmitter(env.jobs, env.store, env.settings, lambda: None)


async def test_codes_use_the_unambiguous_alphabet_and_a_collision_draws_again(open_store):
    store = await open_store()
    draws = iter(["X7K2", "X7K2", "X7K2", "M4PQ"])
    codes = StyleCodes(store.db, draw=lambda n: next(draws))
    first = await codes.create("style", "inky", {"label": "inky"}, user_id=ALICE, guild_id=GUILD)
    second = await codes.create("style", "inky", {"label": "inky"}, user_id=ALICE, guild_id=GUILD)
    assert (first.code, second.code) == ("X7K2", "M4PQ")
    real = await store.style_codes.create("preset", "sd15", {"name": "sd15"}, user_id=ALICE, guild_id=GUILD)
    assert len(real.code) == 4 and set(real.code) <= set(ALPHABET) and not set("01OIL") & set(real.code)
    assert normalize(" x7k-2 ") == "X7K2"
    with pytest.raises(MalformedCode):
        normalize("OI01")


async def test_visibility_guild_public_creator_and_revocation(open_store):
    codes = (await open_store()).style_codes
    guild = await codes.create("style", "inky", {}, user_id=ALICE, guild_id=GUILD)
    public = await codes.create("style", "inky", {}, user_id=ALICE, guild_id=GUILD, public=True)
    dm = await codes.create("style", "inky", {}, user_id=ALICE, guild_id=0)
    assert (await codes.resolve(guild.code.lower(), BOB, GUILD)).user_id == ALICE
    assert (await codes.resolve(public.code, CAROL, OTHER_GUILD)).public
    assert (await codes.resolve(dm.code, ALICE, OTHER_GUILD)).code == dm.code  # the creator, anywhere
    for code, user, guild_id in ((guild.code, CAROL, OTHER_GUILD), (dm.code, BOB, 0), ("ZZZZ", ALICE, GUILD)):
        with pytest.raises(UnknownCode, match=HIDDEN):
            await codes.resolve(code, user, guild_id)
    assert [c.code for c in await codes.visible(BOB, GUILD)] == [public.code, guild.code]
    assert not await codes.revoke(guild.code, BOB)  # only its creator
    assert await codes.revoke(guild.code, ALICE) and not await codes.revoke(guild.code, ALICE)
    with pytest.raises(UnknownCode, match=HIDDEN):
        await codes.resolve(guild.code, ALICE, GUILD)


async def test_create_show_list_revoke_through_the_use_cases(env):
    svc = Services(env)
    text = await style_codes.create(svc, "style", "inky", user_id=ALICE, guild_id=GUILD)
    code = text.split("**")[1]
    shown = await style_codes.show(svc, code, BOB, GUILD)
    assert f"<@{ALICE}>" in shown and "style `inky`" in shown and "{prompt}, ink wash" in shown
    assert code in await style_codes.listing(svc, BOB, GUILD)
    assert await style_codes.choices(svc, BOB, GUILD, "ink") == [(f"{code} · style inky", code)]
    with pytest.raises(UserError, match="only its author or an admin"):
        await style_codes.create(svc, "style", "inky", user_id=BOB, guild_id=GUILD, public=True)
    await env.store.presets.save("image", "mine", {"model": "m", "family": "sd15", "steps": 9}, user_id=BOB)
    preset_code = code_of(await style_codes.create(svc, "preset", "mine", user_id=BOB, guild_id=GUILD))
    assert "steps 9" in await style_codes.show(svc, preset_code, ALICE, GUILD)
    with pytest.raises(UserError, match="only its creator"):
        await style_codes.revoke(svc, code, BOB)
    assert "revoked" in await style_codes.revoke(svc, code, ALICE)
    messages = set()
    for c, user, guild_id in ((code, BOB, GUILD), (preset_code, CAROL, OTHER_GUILD), ("QQQQ", BOB, GUILD)):
        with pytest.raises(UserError) as e:
            await style_codes.show(svc, c, user, guild_id)
        messages.add(str(e.value).replace(normalize(c), "CODE"))
    assert messages == {f"style code 'CODE' {HIDDEN}"}  # revoked, other guild, unknown: one message


async def test_submission_expands_the_code_once_and_refuses_bad_ones(env):
    svc, sub = Services(env), submitter(env)
    await env.store.presets.save("image", "mine", {"model": "m", "family": "sd15", "steps": 9}, user_id=ALICE)
    code = code_of(await style_codes.create(svc, "preset", "mine", user_id=ALICE, guild_id=GUILD))
    payload = await account.imagine_payload(svc, user_id=BOB, guild_id=GUILD, prompt="a fox", style_code=code)
    job = await env.jobs.require(await sub.submit(Requester(BOB, GUILD), "generate", payload))
    assert job.payload["preset"] == "mine" and job.payload["shared"]["preset"]["steps"] == 9
    assert job.payload["style_code"] == code
    forged = {"prompt": "x", "shared": {"code": "AAAA", "preset": {"name": "evil", "model": "/x"}}}
    job = await env.jobs.require(await sub.submit(Requester(BOB, GUILD), "generate", forged))
    assert "shared" not in job.payload  # only ever set from a code
    with pytest.raises(InvalidRequest, match="sets the preset to 'mine'"):
        await sub.submit(
            Requester(BOB, GUILD), "generate", {"prompt": "x", "preset": "sd15", "style_code": code}
        )
    with pytest.raises(InvalidRequest, match=HIDDEN):
        await sub.submit(Requester(CAROL, OTHER_GUILD), "generate", {"prompt": "x", "style_code": code})
    with pytest.raises(UserError, match="not a style code"):
        await account.imagine_payload(svc, user_id=BOB, guild_id=GUILD, prompt="x", style_code="no!")


async def test_chat_reads_a_style_code_and_the_generate_tool_uses_it(env):
    read = facts("a fox in the snow --style-code x7k2")
    assert read.args["style_code"] == "X7K2" and "style" not in read.prompt.lower()
    assert facts("use style code M4PQ for a cat").args["style_code"] == "M4PQ"
    assert "style_code" not in facts("what is a style code please").args
    svc = Services(env)
    code = code_of(await style_codes.create(svc, "style", "inky", user_id=ALICE, guild_id=GUILD))
    call = await Orchestrator(env.services).execute(
        env.ctx(BOB), {"tool": "generate", "args": {"prompt": "a fox", "style_code": code}}
    )
    assert call.executed and call.result["style"] == "inky", call.error
    job = await env.jobs.require(call.result["job_ids"][0])
    assert job.payload["shared"]["style"]["content"] == "{prompt}, ink wash"


async def test_terminal_stylecode_commands_and_imagine_option(env):
    chat = TerminalChat(Services(env), agent=None, user_id=ALICE)  # type: ignore[arg-type]
    made = await chat.command("/stylecode create style watercolor --public")
    code = made.split("**")[1]
    assert "usable by anyone" in made
    assert code in await chat.command("/stylecode list")
    assert "style `watercolor`" in await chat.command(f"/stylecode show {code}")
    assert parse_imagine(f"a fox --style-code {code} at dusk").style_code == code
    assert parse_imagine(f"a fox --style-code={code}").prompt == "a fox"
    with pytest.raises(UserError, match="needs a code"):
        parse_imagine("a fox --style-code")
    with pytest.raises(UserError, match="usage: /stylecode"):
        await chat.command("/stylecode create colour watercolor")
    assert "revoked" in await chat.command(f"/stylecode revoke {code}")
    with pytest.raises(UserError, match=HIDDEN):
        await chat.command(f"/stylecode show {code}")


async def test_a_generation_with_a_code_records_the_resolved_style_in_history(start):  # noqa: F811
    svc = await start()
    await svc.store.library.add("inky", "style", "{prompt}, ink wash", negative="colour", guild_id=GUILD)
    text = await style_codes.create(svc, "style", "inky", user_id=ALICE, guild_id=GUILD, public=True)
    code = text.split("**")[1]
    job = await run(
        svc, {"prompt": "a fox", "preset": "tiny", "style_code": code}, user=BOB, guild=OTHER_GUILD
    )
    assert job.state == "done", job.error  # another guild: the style travels as the code's snapshot
    gen = await svc.store.history.get(job.result["generation_id"], Scope(BOB))
    assert (gen.style, gen.prompt, gen.params["style_code"]) == ("inky", "a fox, ink wash", code)
    assert "colour" in gen.negative
