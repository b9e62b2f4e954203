"""From a model's raw answer to a caption: strip chat boilerplate, and tell usable captions from broken ones.

Vision-language models wrap their answers in phrases a video generator should never learn to
expect ("Sure! Here is a caption:", "The video shows ..."), and small models sometimes fall into
loops ("a man a man a man ...", "........"), stop too early or run out of tokens mid-sentence.
`clean_caption` removes the wrapping; `caption_problem` names what is wrong with a caption, if
anything, so the stage can retry it and, failing that, drop the clip with the raw text kept.
Plain functions on strings: tested on crafted examples, no model needed.
"""

from __future__ import annotations

import re

# "Assistant:", "Caption:" ... a role or field label the model repeated before its answer.
_LABEL = re.compile(r"^(?:assistant|answer|caption|description|video caption)\s*:\s*", re.IGNORECASE)
# "Sure! Here is a short caption for the video:" -- a preamble that ends in a colon.
_PREAMBLE = re.compile(
    r"^(?:(?:sure|certainly|of course|okay|ok)\b[!.,]*\s*)?here(?:'s| is| are)\b[^:\n]{0,80}:\s*",
    re.IGNORECASE,
)
_POLITE = re.compile(r"^(?:sure|certainly|of course)\b[!.,]+\s*", re.IGNORECASE)
# "In this video, we see", "The video shows", "This clip depicts" ... at the start only: later
# sentences keep their wording, since removing a verb there would break the grammar.
_MEDIUM = r"(?:video|clip|footage|scene|animation|sequence|frames|images?)"
_VERB = (
    r"(?:shows?|depicts?|features?|captures?|showcases?|presents?|displays?|illustrates?|"
    r"begins with|opens with|starts with|is of|consists of)"
)
_FRAMING = re.compile(
    rf"^(?:in (?:the|this|these) {_MEDIUM},?\s+(?:we (?:can )?see\s+)?|"
    rf"(?:the|this|these) {_MEDIUM} {_VERB}\s+|"
    rf"this is an? {_MEDIUM} (?:of|showing)\s+|"
    rf"we (?:can )?see\s+)",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`"


def shorten(text: str, max_chars: int) -> str:
    """`text` on one line with single spaces, at most `max_chars` characters long: when it is
    longer, cut after the last whole word that fits and ended with "…" (a word longer than half
    the room is cut inside, rather than leaving almost nothing)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]  # room for the ellipsis
    if text[max_chars - 1] != " " and cut.rfind(" ") > max_chars // 2:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"


def clean_caption(raw: str) -> str:
    """The caption in `raw` without chat boilerplate, on one line with single spaces, its first
    letter capitalised. Only the opening is rewritten: the rest is the model's own text."""
    text = " ".join(raw.split())
    for _ in range(4):  # boilerplate comes stacked ("Sure! Here is a caption: The video shows ...")
        before = text
        for pattern in (_LABEL, _PREAMBLE, _POLITE, _FRAMING):
            text = pattern.sub("", text, count=1)
        text = _strip_quotes(text)
        if text == before:
            break
    return text[:1].upper() + text[1:]


def _strip_quotes(text: str) -> str:
    """Remove quotes around the whole caption (not quotes inside it)."""
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES + "." and text.count(text[0]) <= 2:
        inner = text[1:-1] if text[-1] in _QUOTES else text[1:-2] + "."
        return inner.strip().strip(_QUOTES).strip()
    return text


def caption_problem(caption: str, finished: bool, min_words: int = 3) -> str | None:
    """Why `caption` (already cleaned) is unusable, or None when it is fine.

    `finished` says whether the model ended the caption itself; a caption cut off at the token
    limit is "truncated". Looping text is reported before truncation, since loops run until the
    limit and the loop is the more useful diagnosis.
    """
    words = _words(caption)
    if len(words) < min_words:
        return f"empty ({len(words)} word{'s' if len(words) > 1 else ''})" if words else "empty"
    loop = repetition(caption)
    if loop:
        return f"repetition loop ({loop})"
    if not finished:
        return "truncated (no end before max_new_tokens)"
    return None


def repetition(text: str) -> str | None:
    """A short description of the loop in `text`, or None. Loops are:

    - one character, other than a digit or space, 8 or more times in a row ("!!!!!!!!", "......");
    - a run of words repeated back to back: one word 4 times ("very very very" is English), two
      words 3 times, 3 to 12 words twice;
    - the same sentence of 3 or more words twice;
    - 30 or more words of which fewer than a quarter are different.
    """
    if match := re.search(r"([^\s\d])\1{7,}", text):
        return f"{match.group(1)!r} x{len(match.group(0))}"
    words = _words(text)
    for size in range(1, 13):
        needed = {1: 4, 2: 3}.get(size, 2)
        for start in range(len(words) - size * needed + 1):
            run = words[start : start + size]
            if all(words[start + k * size : start + (k + 1) * size] == run for k in range(1, needed)):
                return f"{' '.join(run)!r} x{needed}+"
    seen: set[tuple[str, ...]] = set()
    for sentence in re.split(r"[.!?;]+", text):
        key = tuple(_words(sentence))
        if len(key) >= 3:
            if key in seen:
                return f"sentence {' '.join(key)!r} repeated"
            seen.add(key)
    if len(words) >= 30 and len(set(words)) < len(words) / 4:
        return f"{len(set(words))} different words in {len(words)}"
    return None


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())
