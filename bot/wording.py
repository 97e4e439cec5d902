"""Text drafts cut out of a request by rules: the image prompt, an edit's change, a history query, a focus."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tools.prompt_rules import Extract

_QUOTES = re.compile(r"\"([^\"]{3,})\"|“([^”]{3,})”|«\s*([^»]{3,}?)\s*»|「([^」]{3,})」|(?<![\w])'([^']{3,})'(?![\w])")
_AFTER_COLON = re.compile(r"\b(?:prompts?|promt)\b[^\n]*?:\s*(?P<p>[^\n]{3,})$")
_LEAD_DANGLING = frozenset(["and", "in", "of", "at", "for", "but", "then", "also", "to", "on", "by", "as", "it"])
_TRAIL_DANGLING = frozenset(
    ["and", "with", "in", "of", "at", "for", "but", "then", "also", "a", "an", "the", "to", "on", "by", "as",
     "please", "pls", "x"]
)  # fmt: skip
_PUNCT = ",;:.-!?"
_EDIT_LEAD = (
    r"^(?:(?:can|could|would)\s+(?:you|u)\s+)?(?:please\s+|pls\s+|now\s+|ok\s+|okay\s+|and\s+|then\s+)*"
    r"(?:make|turn|change|render|redo|regenerate|remake|draw|do|give|try|put)\s+"
    r"(?:it|this|that|them|the\s+(?:image|picture|photo|one))?\s*(?:again\s*)?(?:but\s+|into\s+|to\s+|with\s+)?",
    r"^(?:the\s+)?same\s+(?:thing|one|image|picture|idea|scene|prompt)?\s*(?:but|again)?\s*",
    r"^(?:again|once\s+more|one\s+more\s+time)[,\s]*(?:but\s+|with\s+)?",
    r"^(?:add|put\s+in|include)\s+",
    r"^(?:another|other|different)\s+(?:one|version|take|variation)s?\s*(?:but\s+|with\s+)?",
    r"^(?:\d|two|three|four)?\s*more\s+(?:like\s+(?:this|that|it)|of\s+(?:those|these|them))\s*(?:but\s+|with\s+)?",
    r"^(?:like\s+(?:this|that))\s*(?:but\s+|with\s+)?",
)
_FOCUS = re.compile(
    r"\b(?:focus(?:ing)?\s+on|especially|esp\.?|particularly|in\s+particular|mostly|mainly|above\s+all|look(?:ing)?\s+at"
    r"|pay\s+attention\s+to|concentrate\s+on|in\s+terms\s+of|what\s+about|how\s+(?:are|is)|about|check(?:ing)?"
    r"|(?:does|do|is|are)(?=\s+(?:the\s+|its\s+)?[\w-]+\s+(?:work|look|fit|ok|okay|good|right|off)\b)"
    r"|guarda(?:\s+soprattutto)?|surtout|sobre\s+todo|vor\s+allem|principalmente"
    r"|(?:feedback|thoughts|opinion|notes|critique|comments?)\s+(?:on|about)|think\s+(?:of|about)"
    r"|how(?:'s|\s+is|\s+are|\s+was)(?=\s+the\s)"
    r"|(?:acha|achas|pensa|penses|opinas|piensas)\s+(?:de|del|des|du|das|dos|da|do|della|delle|sur)\b)"
    r"\s+(?:the\s+|its\s+|my\s+|i\s+|le\s+|la\s+|les\s+|los\s+|las\s+|die\s+|os\s+|as\s+)?(?P<f>[^,.;!?\n]{2,80})"
)
_NOT_FOCUS = re.compile(
    r"\b(?:this|that|it|my|the)?\s*(?:last|latest|newest|recent|new)?\s*"
    r"(?:image|picture|pic|photo|one|result|render|drawing)\b|\b(?:this|that|it)\b"
)
_CUT_QUERY = re.compile(r"\b(?:but|and\s+then|then|and\s+make|and\s+draw|and\s+turn|so\s+i\s+can)\b.*$")


def _close(a: str, b: str) -> bool:
    """True when a and b are one edit apart (insert, delete, substitute or swap two neighbours)."""
    if abs(len(a) - len(b)) > 1 or a[0] != b[0]:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def has_word(words: Sequence[str], vocab: Sequence[str], real_words: frozenset[str] = frozenset()) -> bool:
    """A vocabulary word among `words`; words of 5+ letters also match with one typo (never `real_words`)."""
    present = set(words)
    if present & set(vocab):
        return True
    by_start: dict[str, list[str]] = {}
    for v in vocab:
        if len(v) >= 4 and " " not in v:
            by_start.setdefault(v[0], []).append(v)
    for w in present - real_words:
        if len(w) < 4:
            continue
        for v in by_start.get(w[0], ()):
            # 5+ letters: one typo; 4 letters: one letter too many ("draww") or two swapped ("drwa")
            short_ok = len(w) == 5 or (len(w) == 4 and sorted(w) == sorted(v))
            if (len(v) >= 5 or short_ok) and abs(len(w) - len(v)) <= 1 and _close(w, v):
                return True
    return False


def quoted_of(text: str) -> str:
    """Text the user quoted ("a quiet forest"), or what follows "prompt:"; '' when there is none."""
    m = _QUOTES.search(text)
    if m:
        return next(g for g in m.groups() if g).strip()
    m = _AFTER_COLON.search(text)
    if not m:
        return ""
    first = re.split(r"(?<=[.!?])\s+(?=\S)", m.group("p").strip(), maxsplit=1)[0]  # "...: a cat. don't draw it"
    return first.strip().rstrip(".").strip("\"'")


def _cut(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` with the spans replaced by commas (clause breaks)."""
    out, pos = [], 0
    for start, end in sorted(spans):
        if start >= pos:
            out.append(text[pos:start])
            out.append(", ")
        pos = max(pos, end)
    out.append(text[pos:])
    return "".join(out)


def tidy(text: str) -> str:
    """Single spaces, no empty clauses, and no dangling connectives or punctuation at either end (linear time)."""
    parts = [p.strip() for p in re.split(r"\s*[,;]\s*", " ".join(text.split()))]
    words = ", ".join(p for p in parts if p and not re.fullmatch(r"[\W_]+", p)).split(" ")
    while words and (not words[0].strip(_PUNCT) or words[0].strip(_PUNCT).lower() in _LEAD_DANGLING):
        words.pop(0)
    while words and (not words[-1].strip(_PUNCT) or words[-1].strip(_PUNCT).lower() in _TRAIL_DANGLING):
        words.pop()
    return " ".join(words).strip(" .!?,;:-")


def _strip(text: str, patterns: Sequence[str], *, repeat: bool) -> str:
    for _ in range(6 if repeat else 1):
        before = text
        for p in patterns:
            text = re.sub(p, "", text, count=1, flags=re.IGNORECASE).strip()
        if text == before:
            break
    return text


def draft_prompt(text: str, removed: Sequence[tuple[int, int]], ex: Extract) -> str:
    """The image prompt: the request without its request words, argument phrases and filler."""
    body = _cut(text, removed)
    for p in ex.filler:
        body = re.sub(p, " ", body, flags=re.IGNORECASE)
    clauses = [_strip(c.strip(), ex.lead, repeat=True) for c in re.split(r"(?<=[,;])", body)]
    return tidy(" ".join(clauses))


def edit_change(text: str, removed: Sequence[tuple[int, int]], ex: Extract) -> str:
    """For an edit of the user's image: just the change ("make it darker" -> "darker")."""
    body = _cut(text, removed)
    for p in ex.filler:
        body = re.sub(p, " ", body, flags=re.IGNORECASE)
    body = _strip(tidy(body), ex.lead[:3], repeat=True)
    return tidy(_strip(body, _EDIT_LEAD, repeat=True))


_TWIST = re.compile(r"\b(?:but|except|only|just)\s+(?:make\s+it\s+|this\s+time\s+|now\s+)?(?P<t>.+)$")


def twist_of(text: str, ex: Extract) -> str:
    """What changes in "like my blue robot but with a red hat" ("with a red hat"); '' without one."""
    m = _TWIST.search(text)
    return draft_prompt(m.group("t"), [], ex) if m else ""


def query_of(low: str, stop: Sequence[str]) -> str:
    """History search words: the request without search words, filler and dates ("find my old robots" -> robots)."""
    low = _CUT_QUERY.sub("", low)
    stop_set = set(stop) | {"like", "ones", "and", "or", "des", "une", "un"}
    stop_long = [s for s in stop_set if len(s) >= 5]
    words = [
        w
        for w in re.findall(r"[^\W_]+(?:['-][^\W_]+)*", low)
        if w not in stop_set and not w.isdigit() and not (len(w) >= 5 and has_word([w], stop_long))
    ]
    return " ".join(words)


def clean_focus(text: str) -> str:
    """A focus without words that only point at the image ("the photo", "my last one"); '' when nothing is left."""
    text = re.sub(r"\b(?:in|of|on)\s+(?:my|the|this)\s+(?:most\s+)?(?:recent|last|latest|new)?\s*\w*\s*$", " ", text)
    text = re.sub(r"\b(?:work|look|fit)s?\s+(?:here|ok|okay|good|right)?\s*$", " ", text)
    focus = tidy(_NOT_FOCUS.sub(" ", text))
    return focus if len(focus) >= 2 else ""


def focus_of(low: str) -> str:
    """What a critique should look at ("focus on the colours" -> "colours"); '' when not said."""
    for m in _FOCUS.finditer(low):
        focus = clean_focus(m.group("f"))
        if focus and not re.match(r"(?:honest|it|this|that|good|ok|okay)\b", focus):
            return focus
    return ""
