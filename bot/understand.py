"""What a request asks for, read by rules (prompts/agent/router.toml): route scores and argument drafts.

Nothing here calls a model. The agent uses the scores as a prior (a clear winner is taken without asking the
model) and the arguments read from the user's own words ("two images", "16:9", "seed 42", "without people",
"in watercolor") as the values the model is not asked for again.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.intents import Intent, detect
from bot.wording import draft_prompt, edit_change, focus_of, has_word, query_of, quoted_of, twist_of
from tools.prompt_rules import RouterFile, Signal

MAX_CHARS = 2000
_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_COUNT_NOUN = (
    r"(?:images?|pictures?|pics?|photos?|versions?|variations?|variants?|options?|takes?|drafts?|shots?|renders?"
    r"|ones|wallpapers?|portraits?|drawings?|paintings?|illustrations?|designs?|logos?|icons?|posters?|sketch(?:es)?"
    r"|concepts?|avatars?|imágenes|imagenes|imagens|immagini|bilder|dessins|fotos|varianten|versiones|versões"
    r"|versioni|variantes|copies|exemplaires|ejemplares|copias|kopien|copie|cópias|exemplares|ones|imgs?|gens|pix)"
)
_SEED = re.compile(
    r"\b(?:with\s+(?:the\s+)?|using\s+(?:the\s+)?|on\s+)?(?:seed|graine|semilla|semente|seme)\s*"
    r"(?:=|:|#|of|number|no\.?|is|n°)?\s*(?P<n>\d{1,24})\b"
)
_STYLE_CODE = re.compile(r"(?:--)?\bstyle[\s_-]?code\s*(?:[:=#]|is)?\s*(?P<code>[2-9a-hjkmnp-z]{4,8})\b")
_RATIO = re.compile(r"\b(?:in\s+|at\s+|as\s+)?(?P<w>\d{1,4})\s?(?::|by|/|x)\s?(?P<h>\d{1,4})\b(?:\s+(?:ratio|aspect|format))?")
_NEGATIVE = re.compile(
    r"(?:^|(?<=[\s,;(]))(?:--no|negative(?:\s+prompt)?\s*:|without|w/o|no|avoid(?:ing)?|exclude|excluding|minus"
    r"|(?:do\s+not|don'?t)\s+(?:include|add|show|want|put)(?:\s+any)?|sans|sin|ohne|senza|sem|pas\s+de|keine?)"
    r"\s+(?:any\s+)?(?P<neg>[^,.;!?()\n]+?)"
    r"(?=\s*(?:[,.;!?()\n]|$|\band\b|\bbut\b|\bplease\b|\bpls\b|\bwith\b|\bin\s+(?:it|the\s+(?:picture|image|shot|background))\b))"
)
_NEGATED_DRAW = re.compile(
    r"\b(?:don'?t|do\s+not|no\s+need\s+to|without|never|not)\s+(?:\w+\s+)?(?:draw|render|generate|make|paint|create)"
    r"(?:ing)?\b(?:\s+(?:it|anything|an?\s+image|a\s+picture))?"
    r"|\b(?:sans|sin|ohne|senza|sem)\s+(?:zu\s+)?(?:générer|generer|dessiner|generar|dibujar|generieren|zeichnen|generare"
    r"|disegnare|gerar|desenhar)\b"
)
@dataclass(frozen=True)
class Facts:
    """The request read by rules: route scores, arguments read from the words, and text drafts."""

    text: str
    has_image: bool
    scores: Mapping[str, float]
    fired: tuple[str, ...]
    args: Mapping[str, Any] = field(default_factory=dict)
    read_from: Mapping[str, str] = field(default_factory=dict)  # argument -> the user's words it came from
    prompt: str = ""
    change: str = ""  # for an edit of the user's image: the change only ("darker", "at night")
    twist: str = ""  # "like my robot but with a hat": "with a hat"
    quoted: str = ""
    query: str = ""
    focus: str = ""
    latest_image: bool = False
    past: bool = False
    asks_to_draw: bool = False  # an explicit picture request, not just a description
    intent: Intent | None = None

    def ranked(self) -> list[tuple[str, float]]:
        """Routes by score, best first."""
        return sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))


def normalize(text: str) -> str:
    """Lower case, plain quotes and x for ×; the same length as `text` when lower() keeps it."""
    low = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("\u00d7", "x")
    return low.replace("\u201c", '"').replace("\u201d", '"')


def tokens(low: str) -> list[str]:
    """The words of a lower-cased text."""
    return _TOKEN.findall(low)


def _fires(
    sig: Signal, low: str, image: tuple[bool, bool], intent: bool, style: bool, real: frozenset[str],
    offered: bool = False,
) -> bool:  # fmt: skip
    words = tokens(low)
    has_image, about_image = image
    if (sig.needs_image and not has_image) or (sig.about_image and not about_image):
        return False
    if sig.after_prompt and not offered:
        return False
    if sig.intent:
        return intent
    if sig.with_words and not has_word(words, sig.with_words, real):
        return False
    if sig.unless_words and has_word(words, sig.unless_words, real):
        return False
    found = has_word(words, sig.words, real) if sig.fuzzy else bool(set(words) & set(sig.words))
    hit = (sig.words and found) or any(re.search(p, low) for p in sig.phrases)
    if sig.style:
        return style and (hit or not (sig.words or sig.phrases))
    return bool(hit)


def _count(low: str, number_words: Mapping[str, int]) -> tuple[int | None, tuple[int, int] | None]:
    """How many images the request asks for ("two images", "4 versions", "3 more"), with its span."""
    num = r"(?P<n>\d{1,3}|" + "|".join(map(re.escape, sorted(number_words, key=len, reverse=True))) + ")"
    patterns = (
        rf"\b(?:a\s+)?{num}\s+(?:(?:different|more|new|other|quick|distinct|separate|unique|alternative|of)\s+)*"
        rf"(?:[^\W\d_]+\s+){{0,2}}?{_COUNT_NOUN}\b(?:\s+(?:of|with|showing|featuring))?",
        rf"\b{num}\s+(?:more|of\s+(?:those|these|them|it)|like\s+(?:this|that|it))\b",
        rf"\b(?:give\s+me|make|draw|generate|create|render|do|want|need|send|show\s+me)\s+{num}"
        r"(?=\s*(?:[,.!?;]|$|please|pls|of\s+(?:them|those|these|it)|versions?|times))",
        rf"\bbatch\s+of\s+{num}\b",
        rf"\b{num}\s+of\s+(?:a|an)\s",
        r"(?<![\w.])x\s?(?P<x>[1-9])\b(?!\s*[:x]\s*\d)",
    )
    for pattern in patterns:
        m = re.search(pattern, low)
        if m:
            raw = m.groupdict().get("n") or m.groupdict().get("x")
            value = int(raw) if raw.isdigit() else number_words[raw]
            if value >= 1:
                return value, m.span()
    return None, None


def _best_of(low: str, best: re.Match[str], count: int | None, words: Mapping[str, int]) -> int:
    """How many to draw for "pick the best": "best of N", else the count, else a small number before it, else 4."""
    nums = "|".join(["[2-4]", *map(re.escape, (w for w, n in words.items() if 2 <= n <= 4))])
    m = re.search(rf"\b({nums})\b", best.group(0)) or next(
        iter(re.finditer(rf"\b({nums})\b(?!\s*(?:d\b|k\b|:|x\s?\d))", low[: best.start()])), None
    )
    found = count or (int(m.group(1)) if m and m.group(1).isdigit() else words.get(m.group(1), 4) if m else 4)
    return max(2, min(4, found))


def _aspect(low: str, words: Mapping[str, Sequence[str]]) -> tuple[str | None, list[tuple[int, int]]]:
    """An aspect ratio written as numbers ("16:9", "16 by 9") or named ("widescreen"), and every span naming one."""
    found, spans = None, []
    for ratio, names in words.items():
        for name in names:
            for m in re.finditer(rf"\b(?:in\s+|as\s+(?:a\s+)?)?{re.escape(name)}\b", low):
                found = found or ratio
                spans.append(m.span())
    exact = _ratio(low)
    if exact:
        return exact[0], [exact[1], *spans]
    return found, spans


def _ratio(low: str) -> tuple[str, tuple[int, int]] | None:
    for m in _RATIO.finditer(low):
        w, h = int(m.group("w")), int(m.group("h"))
        if w == 0 or h == 0:
            continue
        if w >= 64 and h >= 64:  # a size such as 1024x768: its reduced ratio
            from math import gcd

            g = gcd(w, h)
            w, h = w // g, h // g
        return f"{w}:{h}", m.span()
    return None


def _style(low: str, names: Sequence[str], aliases: Mapping[str, str]) -> tuple[str | None, tuple | None, bool]:
    """(style, span, marked): a library style named in the request; `marked` = "in X style", "as X"."""
    table = {n: n for n in names} | {a: label for a, label in aliases.items() if label in names}
    found = []
    for word, label in table.items():
        body = r"[\s-]?".join(re.escape(part) for part in re.split(r"[\s-]+", word))
        for m in re.finditer(rf"(?<![\w-]){body}(?:(?![\w-])|(?=-(?:style|stil|stile|estilo)\b))", low):
            before, after = low[max(0, m.start() - 25) : m.start()], low[m.end() : m.end() + 20]
            pre = re.search(r"(?:\b(?:in|im|en|au|al|nel|no|na|à\s+la|a\s+la)\s+(?:an?\s+|the\s+|el\s+|le\s+)?"
                            r"|\bas\s+(?:an?\s+)?|\blike\s+(?:an?\s+)?|style\s*:\s*"
                            r"|\bin\s+the\s+style\s+of\s+(?:an?\s+)?)$", before)  # fmt: skip
            post = re.match(r"[\s-]*(?:style|stil|stile|estilo|look|aesthetic|vibes?|art\s+style|way)\b", after)
            start = m.start() - (len(pre.group(0)) if pre else 0)
            end = m.end() + (post.end() if post else 0)
            found.append((not (pre or post), m.start(), label, (start, end)))
    if not found:
        return _misspelt_style(low, names)
    unmarked, _, label, span = min(found, key=lambda f: (f[0], -(f[3][1] - f[3][0]), f[1]))
    return label, span, not unmarked


def _misspelt_style(low: str, names: Sequence[str]) -> tuple[str | None, tuple | None, bool]:
    """A style name with one typo, written right before "style" ("cinamatic style")."""
    for m in re.finditer(r"(?P<w>[a-z][a-z-]{3,})[\s-]+(?:style|look|aesthetic)\b", low):
        for name in names:
            if has_word([m.group("w")], [name]):
                pre = re.search(r"\b(?:in|as)\s+(?:an?\s+|the\s+)?$", low[: m.start()])
                return name, ((pre.start() if pre else m.start()), m.end()), True
    return None, None, False


def _preset(low: str, names: Sequence[str]) -> tuple[str | None, tuple[int, int] | None]:
    """An image preset named with a marker ("with sdxl", "using the flux-schnell preset", "sdxl model")."""
    for name in sorted(names, key=len, reverse=True):
        body = r"[\s.-]?".join(re.escape(p) for p in re.split(r"[\s-]+", name))
        marked = (
            rf"\b(?:(?:with|using|use|on|in|via|through|for)\s+(?:the\s+)?{body}(?:\s+(?:preset|model))?"
            rf"|{body}\s+(?:preset|model)|preset\s*:?\s*{body})(?![\w-])"
        )
        # a name that is no English word (a digit, a hyphen, no vowel: sd15, sdxl, flux-schnell) needs no marker
        plain = re.search(r"[\d-]", name) or not re.search(r"[aeiou]", name)
        pattern = rf"{marked}|(?<![\w-]){body}(?![\w-])" if plain else marked
        m = re.search(pattern, low)
        if m:
            return name, m.span()
    return None, None


_NOT_NEGATIVE = (
    r"(?:way|idea|thanks?|problem|worries|need|clue|draw|render|generat|g[ée]n[ée]rer|dessiner|dibujar|zeichnen"
    r"|generieren|generare|disegnare|gerar|desenhar|mak|creat|paint|zu)"
)


def _negatives(low: str) -> tuple[str | None, list[tuple[int, int]]]:
    """Words the user does not want ("without people", "no text", "avoid blur"), joined, with their spans."""
    found, spans = [], []
    for m in _NEGATIVE.finditer(low):
        words = m.group("neg").split()
        if 0 < len(words) <= 5 and not re.match(_NOT_NEGATIVE, words[0]):
            found.append(" ".join(words))
            spans.append(m.span())
    return (", ".join(dict.fromkeys(found)) or None), spans


def _blank(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` with the spans replaced by spaces (same length)."""
    chars = list(text)
    for a, b in spans:
        for i in range(a, min(b, len(chars))):
            chars[i] = " "
    return "".join(chars)


def _strip_emoji(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("So", "Cs", "Co"))


def read(
    text: str,
    *,
    rules: RouterFile,
    has_image: bool,
    styles: Sequence[str] = (),
    presets: Sequence[str] = (),
    recent_result: bool = False,
    offered_prompt: bool = False,
) -> Facts:
    """Read one request: which routes it points at and the arguments its words give."""
    original = _strip_emoji(text[:MAX_CHARS]).strip()
    low = normalize(original)
    if len(low) != len(original):
        original = low
    intent = detect(original) if has_image else None
    ex = rules.extract
    style, style_span, marked = _style(low, styles, ex.style_aliases)
    args: dict[str, Any] = {}
    read_from: dict[str, str] = {}
    removed: list[tuple[int, int]] = []

    def keep(name: str, value: Any, span: tuple[int, int] | None) -> None:
        if value is None:
            return
        args[name] = value
        if span is not None:
            read_from[name] = original[span[0] : span[1]].strip()
            removed.append(span)

    keep("count", *_count(low, ex.count_words))
    best = next((m for p in ex.best_of if (m := re.search(p, low))), None)
    if best is not None:
        keep("best_of", _best_of(low, best, args.get("count"), ex.count_words), best.span())
    aspect, aspect_spans = _aspect(low, ex.aspect)
    if aspect:
        args["aspect"] = aspect
        read_from["aspect"] = "; ".join(original[a:b].strip() for a, b in aspect_spans)
        removed += aspect_spans
    m = _SEED.search(low)
    if m:
        keep("seed", int(m.group("n")), m.span())
    m = _STYLE_CODE.search(low)
    if m:
        keep("style_code", m.group("code").upper(), m.span())
    negative, neg_spans = _negatives(low)
    if negative:
        args["negative"] = negative
        read_from["negative"] = "; ".join(original[a:b].strip() for a, b in neg_spans)
        removed += neg_spans
    if style:
        args["style"] = style
        read_from["style"] = original[style_span[0] : style_span[1]].strip()
        if marked:
            removed.append(style_span)
    keep("preset", *_preset(low, presets))
    first = re.match(r"\s*([^\W\d_]+)\s+", original)
    word = first.group(1).lower() if first else ""
    if word and word not in ex.lead_words and has_word([word], ex.lead_words):  # a misspelt "draw" at the start
        removed.append(first.span())
    quoted = quoted_of(original)
    plain = low.replace(normalize(quoted), " " * len(quoted)) if quoted else low  # the user's own prompt aside
    undrawn = _NEGATED_DRAW.sub(lambda m: " " * len(m.group(0)), plain)
    latest = recent_result or any(re.search(p, low) for p in ex.latest)
    real = frozenset(ex.real_words)
    bare = _blank(undrawn, removed)  # without "seed 99", "give me 2", "16:9": is the rest a description?
    scores: dict[str, float] = {}
    fired = []
    draws = False
    hits = []
    for sig in rules.signal:
        texts = (undrawn, bare) if sig.route == "generate" else (plain,)
        if any(_fires(sig, t, (has_image, has_image or latest), bool(intent), style is not None, real,
                      offered_prompt) for t in texts):  # fmt: skip
            hits.append(sig)
    routes = {sig.route for sig in hits}
    for sig in hits:
        if set(sig.unless_routes) & routes:  # "find my lighthouse": not also a bare prompt
            continue
        scores[sig.route] = scores.get(sig.route, 0.0) + sig.weight
        fired.append(f"{sig.route}: {sig.name}")
        draws = draws or sig.asks_to_draw
    base = intent.prompt if intent else original
    return Facts(
        text=text[:MAX_CHARS],
        has_image=has_image,
        scores=scores,
        fired=tuple(fired),
        args=args,
        read_from=read_from,
        prompt=quoted or draft_prompt(base if intent else original, [] if intent else removed, ex),
        change=edit_change(original, removed, ex),
        twist=twist_of(_blank(original, removed), ex),
        quoted=quoted,
        query=query_of(low, ex.query_stop),
        focus=focus_of(low),
        latest_image=latest,
        past=latest or scores.get("search_history", 0) >= 3 or any(re.search(p, low) for p in ex.past),
        intent=intent,
        asks_to_draw=draws,
    )
