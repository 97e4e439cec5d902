"""What a message asks of the user's image ("same pose as this", "in the style of this", "zoom out"), by rules.

English, case-insensitive keyword/regex rules. Control and reference need a word pointing at an image
("this pose", "the pose from my photo", "keep the pose"): "a pose of a cat" is an ordinary prompt.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from typing import Any

from engine.runtime.control import CONTROL_TYPES, MAX_CONTROLS, OUTPAINT_DIRECTIONS, REFERENCE_MODES

MAX_CHARS = 2000  # longer messages are read up to here (the agent shows the model no more either)
FACTOR_REACH = 12  # characters past the clause where "1.5x" still belongs to "zoom out"
_IMAGE_NOUN = (
    r"(?:image|photo|photograph|picture|pic|upload|attachment|reference|original|drawing|render|one|sketch"
    r"|doodle|scribble|painting|artwork|art|screenshot|shot|frame|selfie)"
)
DEICTIC = (
    rf"(?:(?:this|that|these|those)(?:\s+{_IMAGE_NOUN})?|it|here|above"
    rf"|(?:the|my|our|his|her|their|your)\s+(?:attached\s+|uploaded\s+|first\s+)?{_IMAGE_NOUN}"
    rf"|attached(?:\s+{_IMAGE_NOUN}|\s+file)?|one\s+(?:above|i\s+(?:sent|attached|uploaded|posted)))\b"
)
POINTER = r"(?:same|identical|matching|exact|this|that|these|those|my|our)"  # directly before the kind word
KEEP_VERB = (
    r"(?:keep|keeping|copy|copying|match|matching|mirror|mirroring|reuse|reusing|preserve|preserving|retain"
    r"|retaining|maintain|maintaining|replicate|replicating|borrow|borrowing|reproduce|reproducing|steal|follow"
    r"|following|trace|tracing|respect|respecting)"
)
LINK = r"(?:of|from|in|as\s+in|as|like|shown\s+in|used\s+in|on)"
CONTROL_WORDS: dict[str, str] = {
    "openpose": r"pos(?:e|es|ed|ing|ture|tures)|stance|body\s+(?:position|language)",
    "softedge": r"soft\s+edges?",
    "canny": r"composition|(?<!soft\s)edges|outlines?|contours?|framing",
    "depth": r"depth\s+map|depth(?!\s+of\s+field)|layout",
    "lineart": r"line[\s-]?art|line[\s-]?work|lines",
    "scribble": r"scribbles?|doodles?|sketch(?:es)?",
}
REFERENCE_WORDS: dict[str, str] = {
    "style": (
        r"(?:art\s+|drawing\s+|painting\s+|visual\s+)?styled?|aesthetics?|vibes?|mood|palette"
        r"|colou?rs|colou?r\s+(?:palette|scheme|grading)|look(?!\s+(?:like|at)\b)"
    ),
    "subject": r"characters?|subjects?|person|people|face|creature|mascot|outfit|product",
}
_DIRECTIONS = {
    "left": "left",
    "right": "right",
    "top": "up",
    "up": "up",
    "upward": "up",
    "upwards": "up",
    "above": "up",
    "bottom": "down",
    "down": "down",
    "downward": "down",
    "downwards": "down",
    "below": "down",
}
_DIR = r"(?P<dir>left|right|top|bottom|upwards?|downwards?|up|down|above|below)\b"
_NOT_AFTER_ARTICLE = r"(?<!\ba\s)(?<!\bthe\s)(?<!frying\s)"
_OBJECT = r"(?:\s+(?:it|(?:this|that|the|my|our)(?:\s+[a-z]+)?))?"
_AMOUNT = r"(?:\s+(?:a\s+bit|a\s+little|more|further|some|out))?"
OUTPAINT_DIRECTIONAL = [
    rf"\b{_NOT_AFTER_ARTICLE}(?:extend|expand|outpaint|pan|continue|grow|stretch|widen|wider|enlarge)\b{_OBJECT}{_AMOUNT}"
    rf"\s+(?:(?:to|towards?|on|at|from)\s+)?(?:the\s+)?{_DIR}",
    rf"\b(?:add\s+)?more\s+(?:space|room|sky|ground|floor|background|scenery|scene|canvas)\s+"
    rf"(?:(?:on|to|at)\s+(?:the\s+)?)?{_DIR}",
]
OUTPAINT_ALL = [
    r"\bzoom(?:ed|ing)?[\s-]*out\b(?![\s-]+(?:view|shot|photo|picture|image|perspective)\b)",
    r"\bun-?crop\b",
    r"\boutpaint\b",
    r"\bpull\s+(?:the\s+camera\s+)?back\b",
    r"\bwiden\s+(?:the\s+)?(?:shot|view|frame|image|picture|scene|canvas)\b",
    r"\b(?:expand|extend|enlarge|grow)\s+(?:the\s+)?(?:canvas|frame|borders?|image|picture|photo|scene)"
    r"(?:\s+all\s+around)?\b(?!\s+(?:to|towards?|on|at)\b)",
    r"\bshow\s+more\s+(?:of\s+the\s+)?(?:surroundings|background|scene|around)\b",
]
_FACTOR = re.compile(
    r"(?P<num>\d+(?:\.\d+)?)\s*(?:x|×|times)(?![\w])|\bby\s+(?P<pct>\d+(?:\.\d+)?)\s*(?:%|percent)"
    r"|\b(?P<word>twice|double|triple|three\s+times)\b"
)
_NEGATION = re.compile(r"\b(?:don'?t|do\s+not|not|no|never|without|stop|instead\s+of)\b(?:\s+\S+){0,2}\s*$")
_TAIL = re.compile(rf"\s+(?:as|like|from|of|in)\s+(?:in\s+)?(?:the\s+)?{DEICTIC}")
_MARK = "\x00"  # stands for a removed request phrase
_EDGE_TEXT = (
    "use using keep copy with in the same as like and but please pls of from it this that to then also just"
    " now can you do for into"
)
_EDGE_WORDS = frozenset(_EDGE_TEXT.split())
_CLAUSE_END = re.compile(r"[,;!?()\n]|\.(?!\d)")


@dataclass(frozen=True)
class Intent:
    """Generate arguments a message asks for: control types, a reference mode, an outpaint direction/factor."""

    control: tuple[str, ...] = ()
    reference: str | None = None
    outpaint: str | None = None
    outpaint_factor: float | None = None
    prompt: str = field(default="", compare=False)  # the message without the request words, for the hint

    def __post_init__(self) -> None:
        bad = [c for c in self.control if c not in CONTROL_TYPES]
        if bad or len(self.control) > MAX_CONTROLS or len(set(self.control)) != len(self.control):
            raise ValueError(f"control must be up to {MAX_CONTROLS} distinct {CONTROL_TYPES}: {self.control}")
        if self.reference not in (None, *REFERENCE_MODES):
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, not {self.reference!r}")
        if self.outpaint not in (None, *OUTPAINT_DIRECTIONS):
            raise ValueError(f"outpaint must be one of {OUTPAINT_DIRECTIONS}, not {self.outpaint!r}")
        if self.outpaint_factor is not None and (self.outpaint is None or self.outpaint_factor <= 0):
            raise ValueError("outpaint_factor needs outpaint and must be positive")

    def __bool__(self) -> bool:
        return bool(self.control or self.reference or self.outpaint)

    def tool_defaults(self) -> dict[str, Any]:
        """The generate arguments this intent fills in when the model leaves them out."""
        out: dict[str, Any] = {}
        if self.control:
            out["control"] = list(self.control)
        if self.reference:
            out["reference"] = self.reference
        if self.outpaint:
            out["outpaint"] = self.outpaint
        if self.outpaint_factor is not None:
            out["outpaint_factor"] = self.outpaint_factor
        return out


def _normalize(text: str) -> str:
    """Lower case with plain quotes; the same length as `text` where possible (spans map back)."""
    return text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("\u00d7", "x")


def _clause(text: str, pos: int) -> tuple[int, int]:
    """(start, end) of the clause around `pos` (punctuation-delimited)."""
    starts = [m.end() for m in _CLAUSE_END.finditer(text, 0, pos)]
    end = _CLAUSE_END.search(text, pos)
    return (starts[-1] if starts else 0), (end.start() if end else len(text))


def _negated(text: str, start: int) -> bool:
    return bool(_NEGATION.search(text[_clause(text, start)[0] : start]))


def _kind_spans(text: str, words: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(word span, phrase span) of `words` pointing at an image: "same/this X", "X of this image", "keep the X"."""
    kind = rf"(?:{words})\b"
    pointed = (
        rf"\b{POINTER}\s+(?:exact\s+|same\s+|very\s+|kind\s+of\s+|type\s+of\s+)?(?:\w+'s\s+)?"
        rf"(?:(?:rough|quick|little|messy|simple|old|own|first|new|original)\s+)?({kind})"
    )
    linked = rf"\b({kind})(?:\s+(?:it|them))?\s+{LINK}\s+(?:the\s+)?{DEICTIC}"
    kept = rf"\b{KEEP_VERB}\s+(?:the\s+|its\s+|his\s+|her\s+|their\s+|my\s+)?({kind})(?!\s+{LINK}\s)"
    spans = []
    for pattern in (pointed, linked, kept):
        for m in re.finditer(pattern, text):
            if not _negated(text, m.start()):
                tail = _TAIL.match(text, m.end())
                spans.append((m.span(1), (m.start(), tail.end() if tail else m.end())))
    return sorted(spans)


def _factor(text: str, pos: int) -> tuple[float | None, tuple[int, int] | None]:
    """The canvas factor written near an outpaint request ("1.5x", "by 50%", "twice") and its span."""
    start, end = _clause(text, pos)
    m = _FACTOR.search(text, start, end + FACTOR_REACH)  # "zoom out, 1.5x" too
    if m is None:
        return None, None
    if m.group("num"):
        return float(m.group("num")), m.span()
    if m.group("pct"):
        return 1.0 + float(m.group("pct")) / 100, m.span()
    return (3.0 if m.group("word").startswith(("triple", "three")) else 2.0), m.span()


def _outpaint(text: str, removed: list[tuple[int, int]]) -> tuple[str | None, float | None]:
    """(direction, factor) of the first outpaint request; its words are added to `removed`."""
    found: list[tuple[int, int, int, str]] = []  # (start, 0 = directional wins a tie, end, direction)
    for pattern in OUTPAINT_DIRECTIONAL:
        found += [(m.start(), 0, m.end(), _DIRECTIONS[m.group("dir")]) for m in re.finditer(pattern, text)]
    for pattern in OUTPAINT_ALL:
        found += [(m.start(), 1, m.end(), "all") for m in re.finditer(pattern, text)]
    found = sorted(f for f in found if not _negated(text, f[0]))
    if not found:
        return None, None
    removed += [(start, end) for start, _, end, _ in found]
    factor, span = _factor(text, found[0][0])
    if span:
        removed.append(span)
    return found[0][3], factor


_AS_SUBJECT = re.compile(
    r"\b(?:use|using|take|taking|keep|keeping)\s+(?:him|her|them|it|this|that|my\s+[a-z]+|the\s+[a-z]+)"
    r"\s+as\s+(?:the\s+|a\s+|my\s+)?(?:main\s+)?(?:subject|reference|character|model|hero)\b"
)


@functools.lru_cache(maxsize=256)  # the front and the agent both ask about the same message: read it once
def detect(text: str) -> Intent | None:
    """The control/reference/outpaint request in a message, or None for an ordinary prompt (immutable)."""
    original = text[:MAX_CHARS]
    text = _normalize(original)
    reference: tuple[int, str] | None = None
    taken: list[tuple[int, int]] = []
    for m in _AS_SUBJECT.finditer(text):
        if not _negated(text, m.start()):
            taken.append(m.span())
            reference = reference or (m.start(), "subject")
    for mode, words in REFERENCE_WORDS.items():
        for word, phrase in _kind_spans(text, words):
            taken.append(phrase)
            if reference is None or word[0] < reference[0]:
                reference = (word[0], mode)
    controls: list[tuple[int, str]] = []
    removed = list(taken)
    for kind, words in CONTROL_WORDS.items():
        spans = [(w, p) for w, p in _kind_spans(text, words) if not any(_overlap(w, t) for t in taken)]
        if spans:
            controls.append((spans[0][0][0], kind))
            removed += [p for _, p in spans]
    control = tuple(kind for _, kind in sorted(controls))[:MAX_CONTROLS]
    direction, factor = _outpaint(text, removed)
    if not (control or reference or direction):
        control, direction = _other_languages(text, removed)
    intent = Intent(control, reference[1] if reference else None, direction, factor)
    if not intent:
        return None
    rest = _rest(original if len(original) == len(text) else text, removed)
    return replace(intent, prompt=rest or " ".join(original.split()))


_SAME = r"(?:même|misma|mismo|gleiche[n]?|selbe[n]?|stess[ao]|mesm[ao]|dezelfde|zelfde|ta\s+sama)"
_FOREIGN_CONTROL = {
    "openpose": re.compile(rf"\b{_SAME}\s+(?:pose|posture|postura|posa|haltung|houding)\b"),
    "canny": re.compile(rf"\b{_SAME}\s+(?:composition|composición|komposition|composizione|composição|compositie)\b"),
}
_FOREIGN_GROW = (
    r"\b(?:erweitern|erweitere|vergrößern|étends|étendre|étendez|agrandis|agrandir|amplía|ampliar|extiende|extender"
    r"|estendi|estendere|allarga|amplia|estenda|estender|vergroot|vergroten|breid)\w*"
)
_FOREIGN_SIDES = {
    "left": r"links|gauche|izquierda|sinistra|esquerda", "right": r"rechts|droite|derecha|destra|direita",
    "up": r"oben|haut|arriba|sopra|cima|boven", "down": r"unten|bas|abajo|sotto|baixo|beneden",
}  # fmt: skip
_FOREIGN_ZOOM = re.compile(r"\b(?:dézoom\w*|dezoom\w*|alej[ae]\w*|heraus\s*zoom\w*|rauszoom\w*|zoom\s+indietro"
                           r"|afast[ae]\w*|uitzoom\w*)")  # fmt: skip


def _other_languages(text: str, removed: list[tuple[int, int]]) -> tuple[tuple[str, ...], str | None]:
    """Same pose/composition, extend and zoom out, in French, Spanish, German, Italian, Portuguese and Dutch."""
    control = []
    for kind, pattern in _FOREIGN_CONTROL.items():
        m = pattern.search(text)
        if m:
            control.append(kind)
            removed.append(m.span())
    grow = re.search(_FOREIGN_GROW, text)
    if grow:
        for side, words in _FOREIGN_SIDES.items():
            m = re.search(rf"\b(?:{words})\b", text)
            if m:
                removed += [grow.span(), m.span()]
                return tuple(control), side
    zoom = _FOREIGN_ZOOM.search(text)
    if zoom:
        removed.append(zoom.span())
        return tuple(control), "all"
    return tuple(control), None


def _rest(text: str, removed: list[tuple[int, int]]) -> str:
    """`text` without the request phrases and the filler words touching them ("in the", "use", "but")."""
    parts: list[str] = []
    pos = 0
    for start, end in sorted(removed):
        if start >= pos:
            parts.append(text[pos:start])
            parts.append(f" {_MARK} ")
        pos = max(pos, end)
    parts.append(text[pos:])
    chunks = re.split(r"[,;:!?()\n]+|\.(?!\d)", "".join(parts))
    return ", ".join(c for c in (_trim(chunk.split()) for chunk in chunks) if c)


def _trim(words: list[str]) -> str:
    """Words without the markers and the filler words next to them."""
    drop = set()
    for i, word in enumerate(words):
        if word != _MARK:
            continue
        drop.add(i)
        for step in (-1, 1):
            j = i + step
            while 0 <= j < len(words) and words[j].lower() in _EDGE_WORDS:
                drop.add(j)
                j += step
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def _overlap(span: tuple[int, int], other: tuple[int, int]) -> bool:
    return span[0] < other[1] and other[0] < span[1]
