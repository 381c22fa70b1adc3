"""Opposed wording: sentence embeddings place antonyms close together, so text similarity alone
would merge "a lesion in the left lung" with "... right lung" (cosine 0.97 with all-MiniLM-L6-v2,
above the 0.97 of a true paraphrase like "left lung lesion"). Deduplication and concept matching
refuse to equate two texts that differ by one of these opposed words.
"""

from __future__ import annotations

import re

OPPOSITES: tuple[tuple[str, str], ...] = (
    ("left", "right"), ("upper", "lower"), ("large", "small"), ("larger", "smaller"), ("big", "small"),
    ("old", "young"), ("older", "younger"), ("elderly", "young"), ("high", "low"), ("higher", "lower"),
    ("increased", "decreased"), ("more", "less"), ("more", "fewer"), ("male", "female"), ("man", "woman"),
    ("men", "women"), ("present", "absent"), ("with", "without"), ("bright", "dark"), ("brighter", "darker"),
    ("sharp", "blurry"), ("sharper", "blurrier"), ("unilateral", "bilateral"), ("anterior", "posterior"),
    ("normal", "abnormal"),
)

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def opposed(a: str, b: str) -> bool:
    """True when one text has a word whose opposite only the other has (e.g. left / right)."""
    wa, wb = words(a), words(b)
    for x, y in OPPOSITES:
        if (x in wa and y in wb and x not in wb and y not in wa) or (y in wa and x in wb and y not in wb and x not in wa):
            return True
    return False
