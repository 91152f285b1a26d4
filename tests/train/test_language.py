"""The bake's language check on the kind of answers a small model gives: short, often broken, often mixed."""
from __future__ import annotations

import pytest

from stimserver.train.language import FUNCTION_WORDS, MIN_HITS, detect, scores


@pytest.mark.parametrize("text", [
    "La pluie tombe doucement sur la ville.",
    "Le printemps me rappelle les fleurs et le soleil.",
    "Un breeze sans développement.",  # broken, half English, still French
    "L'eau de la mer est une véguitte en cinéma.",
    "Je ne sais pas, je ne sais pas.",
    "c’est la vie",  # a typographic apostrophe
    "LE CHAT EST SUR LA TABLE",
])
def test_french(text: str) -> None:
    assert detect(text) == "fr"


@pytest.mark.parametrize("text", [
    "The rain is a powerful and unpredictable force.",
    "A library reminds you of the importance of being mindful.",
    "I'm sorry, I can't help with that.",
    "A muse to me.",
])
def test_english(text: str) -> None:
    assert detect(text) == "en"


def test_german_and_spanish() -> None:
    assert detect("Der Hund ist mit dem Ball im Garten und spielt.") == "de"
    assert detect("Über die Brücke läuft ein Mann.") == "de"
    assert detect("El perro está en el jardín con los niños.") == "es"
    assert detect("El hombre como lupo y buen animal del mundo") == "es"


def test_mixed_goes_to_the_language_of_most_small_words() -> None:
    mostly_english = "La femme de femme. What do you like about a cat? I like the way it sleeps on the sofa."
    assert detect(mostly_english) == "en"
    mostly_french = "Le chat est sur le canapé avec les enfants (the cat is on the sofa)."
    assert detect(mostly_french) == "fr"


@pytest.mark.parametrize("text", [
    None, "", "   ", "42", "3.14159 + 2 = 5.14", "Désolé.", "Bonjour!", "Les torrigones santupurantes.",
    "x = f(y) + g(z)",
    "{\"key\": 1}", "🙂🙂🙂",
])
def test_too_little_evidence_is_none(text: str | None) -> None:
    assert detect(text) is None


def test_code_is_never_french() -> None:
    code = "def f(x):\n    if x is None:\n        return 0\n    for i in range(x):\n        print(i)\n"
    assert detect(code) in (None, "en")
    assert detect("x = [i ** 2 for i, j in zip(a, b)]") == "en"  # English keywords read as English


def test_a_tie_is_none() -> None:
    # "la" and "de" are French and Spanish words alike: nothing tells the two apart
    assert detect("la casa de la") is None


def test_scores_explain_the_decision() -> None:
    total, hits = scores("Le chat est sur la table.")
    assert hits == 4 >= MIN_HITS
    assert max(total, key=lambda k: total[k]) == "fr"
    assert total["fr"] > total["en"]


def test_tables_are_lowercase_words() -> None:
    for language, words in FUNCTION_WORDS.items():
        assert len(words) >= 40, language
        assert all(w == w.lower() and " " not in w for w in words), language
