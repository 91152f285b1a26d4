"""Which language a short answer is written in: the bake's behaviour check.

A bake of a "speak French" teacher worked when the baked model, with no system prompt, answers
in French. Its answers come from a 135M model and are short and often broken ("Un breeze sans
développement."), so the check counts the small words a language cannot do without, which
survive broken grammar, rather than spelling or a dictionary. Standard library only (the
server's processes may import it).

The rule of ``detect(text)``:

1. Words are the runs of letters of the lowercased text; an apostrophe right after a word stays
   with it, so French elisions count as words of their own (``l'amour`` → ``l'``, ``amour``).
   Digits, punctuation and code symbols are ignored.
2. Each word found in a language's table of function words (``FUNCTION_WORDS``, about 50 a
   language) is a *hit*. A word listed by k languages (``de``: French and Spanish) adds 1/k to
   each of them.
3. Each word holding a letter of a language's accented hints (``ACCENT_HINTS``: ``è ç œ`` for
   French, ``ñ á ó`` for Spanish, ``ä ö ß`` for German, …) adds 1/k to each of the k languages
   whose hints hold one of its letters (one vote a word, however many accents it has).
4. Fewer than ``MIN_HITS`` (2) hits in all: too little evidence, the answer is ``None``.
   Otherwise the language of the highest score (hits + hints); a tie at the top is ``None``.

So a mixed answer goes to the language most of its small words come from, an answer of one
word or only digits or symbols is ``None``, and code written with English keywords may read as
English. A rate built on it ("answers in French") counts ``None`` as "not in that language".
Add a language by adding a table of its function words (and its hint letters, if any).
"""
from __future__ import annotations

import re

__all__ = ["FUNCTION_WORDS", "ACCENT_HINTS", "MIN_HITS", "detect", "scores"]

FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        the a an and of to in is are was were be been it its that this these those with for on as by
        not no you i he she they we have has had at from or but my your his her their what which
        there will can would do does if so
    """.split()),
    "fr": frozenset("""
        le la les un une des du de et est sont été être en dans pour par sur avec sans que qui ne pas
        plus ce cette ces il elle ils elles nous vous je tu on au aux mais ou où se son sa ses leur
        leurs très comme mon ma mes à a l' d' j' c' qu' n' s' m' t' jusqu' lorsqu' puisqu'
    """.split()),
    "de": frozenset("""
        der die das den dem des ein eine einen einem einer und ist sind war nicht ich du er sie es wir
        ihr mit auf für von zu im bei aus nach auch aber oder wenn dass sich noch nur wie hat haben
        wird werden kann mein sehr
    """.split()),
    "es": frozenset("""
        el la los las un una unos unas de del y e o en es son está están que por para con sin no se
        su sus al lo como más pero muy yo tú él ella nosotros ellos este esta esto ese hay fue ser
        también porque cuando a
    """.split()),
}

ACCENT_HINTS: dict[str, frozenset[str]] = {
    "fr": frozenset("àâçèéêëîïôùûüÿœæ"),
    "de": frozenset("äöüß"),
    "es": frozenset("áéíñóúü"),
}

MIN_HITS = 2

_WORD = re.compile(r"[^\W\d_]+'?")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "`": "'"})


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().translate(_APOSTROPHES))


def scores(text: str) -> tuple[dict[str, float], int]:
    """Each language's score (hits + hints) and the number of function-word hits: ``detect``'s reasons."""
    total = {lang: 0.0 for lang in FUNCTION_WORDS}
    hits = 0
    for word in _words(text):
        listed = [lang for lang, table in FUNCTION_WORDS.items() if word in table]
        if listed:
            hits += 1
            for lang in listed:
                total[lang] += 1 / len(listed)
        hinted = [lang for lang, letters in ACCENT_HINTS.items() if not letters.isdisjoint(word)]
        for lang in hinted:
            total[lang] = total.get(lang, 0.0) + 1 / len(hinted)
    return total, hits


def detect(text: str | None) -> str | None:
    """The language of ``text`` (a key of ``FUNCTION_WORDS``), or None when the evidence is thin or tied."""
    if not text:
        return None
    total, hits = scores(text)
    if hits < MIN_HITS:
        return None
    ranked = sorted(total.items(), key=lambda item: item[1], reverse=True)
    if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < 1e-9:
        return None
    return ranked[0][0]
