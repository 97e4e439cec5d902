"""Saved prompt-prefix states: the agent's step prompts stay warm when turns of different users interleave."""

from __future__ import annotations

import pytest

from engine.runtime.llm import LlamaModel
from engine.runtime.llm.prefix import PrefixStates, SavedState
from tests.test_llm_llama import PRESET

CHOOSE = "You decide what to do with a user's message in an image-making chat. " * 6
FILL = "You write the image prompt for the user's request, keeping every detail they asked for. " * 6


def ask(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def state(tokens: tuple[int, ...], size: int = 10) -> SavedState:
    return SavedState(tokens, b"x" * size)


def test_best_is_the_longest_shared_prefix():
    states = PrefixStates(1000)
    states.put(state((1, 2, 3, 4)))
    states.put(state((1, 2, 9, 9, 9)))
    found, shared = states.best([1, 2, 3, 7])
    assert found.tokens == (1, 2, 3, 4) and shared == 3
    assert states.best([5, 6]) is None


def test_a_longer_state_supersedes_the_ones_it_extends():
    states = PrefixStates(1000)
    states.put(state((1, 2)))
    states.put(state((1, 2, 3)))
    states.put(state((1, 4)))
    assert len(states) == 2
    assert states.best([1, 2, 3])[0].tokens == (1, 2, 3)


def test_least_recently_used_go_first_within_the_budget():
    states = PrefixStates(25)
    states.put(state((1,)))
    states.put(state((2,)))
    states.best([1])  # (1,) is now the most recently used
    states.put(state((3,)))
    assert states.size_bytes <= 25
    assert states.best([2]) is None and states.best([1]) is not None
    states.put(state((4,), size=26))  # larger than the whole budget: not kept
    assert states.best([4]) is None


@pytest.fixture(scope="module")
def models():
    warm = LlamaModel(PRESET, max_tokens=12, temperature=0.0)
    cold = LlamaModel(PRESET, max_tokens=12, temperature=0.0, prefix_cache_mb=0)
    for m in (warm, cold):
        m.load("cpu")
    yield warm, cold
    for m in (warm, cold):
        m.close()


def test_interleaved_step_prompts_stay_warm(models):
    warm, cold = models
    head = len(warm._llama.tokenize(CHOOSE.encode()))
    replies = {}
    for model in (warm, cold):
        model.chat(ask(CHOOSE, "alice: a fox in the snow"))
        model.chat(ask(FILL, "alice: a fox in the snow"))
        replies[model] = model.chat(ask(CHOOSE, "bob: find my castles"))  # another user, the first step's prompt
    assert replies[cold].prompt_eval_tokens > head  # one KV cache: the last prompt (FILL) shared nothing useful
    assert replies[warm].prompt_eval_tokens < replies[cold].prompt_eval_tokens - head + 4
    assert replies[warm].text == replies[cold].text  # a restored prefix answers like a fresh evaluation
    assert warm.prefix_states.hits >= 1


def test_prefix_reuse_off_evaluates_everything(models):
    warm, _ = models
    try:
        warm.prefix_reuse = False
        warm.chat(ask(FILL, "carol: a boat"))
        again = warm.chat(ask(FILL, "carol: a boat at dusk"))
    finally:
        warm.prefix_reuse = True
    assert again.prompt_eval_tokens == again.prompt_tokens


def test_unload_forgets_the_states(models):
    warm, _ = models
    warm.chat(ask(FILL, "dan: a tree"))
    assert len(warm.prefix_states) > 0
    warm.unload()
    assert len(warm.prefix_states) == 0
    warm.load("cpu")
