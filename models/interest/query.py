"""A natural-language query -> interest phrases with a polarity and a weight.

A ``query`` behaviour carries free text and no item ("funny space adventures,
nothing scary"). `decompose` splits it into `Phrase` values: the text to
encode, a polarity (+1 wanted, -1 not wanted) and a weight. The caller
encodes each phrase with the sentence encoder and composes them: positives
become interests with their weights, negatives push matching items down.
This module is rules over English words (stdlib and numpy only, no model):
general English, not tuned to one catalogue.

How a query is read
-------------------
1. Lowercased, apostrophes unified, cut into words and separators.
2. Multi-word cues are matched longest first ("no more" before "no",
   "no more than" before "no more"), so "less than 30 minutes" stays content.
3. One pass over the items keeps a *segment*: the content words of the phrase
   being read, its polarity and its intensity.

   - Hard boundaries (``, ; : . ! ? ( )``, "but", a dash) end the segment and
     reset polarity to positive.
   - Soft boundaries ("and", "or", "nor", "plus", "as well as", "along
     with", "&", "/") end the segment; the next one inherits its polarity and
     intensity, so "no horror or gore" makes both negative and "really love
     jazz and blues" raises both. A comma inside a negated list carries the
     negation when the list is closed by "or"/"nor" ("no horror, gore or
     jump scares").
   - A negation cue ("no", "not", "nothing", "without", "never", "except",
     "avoid", "none of", "don't", "hate", "dislike", "anything but", "less",
     "no more", ...) ends any content before it and makes what follows
     negative ("thrillers without gore": +thrillers, -gore).
   - "instead of" / "rather than": the phrase before is positive, the one
     after negative ("podcasts instead of audiobooks").
   - Request framing ("I want", "show me", "looking for", "in the mood for",
     "I like", ...) starts a positive phrase, unless it follows a negation
     with nothing in between ("don't want", "not a fan of").
   - Intensity words raise (+1: "love", "really", "very", "especially",
     "mostly", ...) or lower (-1: "a bit", "maybe", "a little", "sometimes",
     "kind of", ...) the phrase's score, clipped to [-2, 2]; a segment
     without its own intensity word inherits the one of the list it is in.
   - Filler ("something", "stuff", "please", "some", pronouns) is dropped
     anywhere; function words only at a phrase's edges, so "hotel with a
     pool" keeps its "with a".
4. "ones" takes the head (last word) of the previous phrase: "comedies, but
   not romantic ones" -> "romantic comedies".
5. Duplicates (same text and polarity) are merged, keeping the first place
   and the higher intensity; each polarity group's weights are a softmax of
   its intensities (`composition_weights`).

"with" is *not* a boundary: in queries it attaches an attribute to the thing
asked for ("movies with dragons", "hotel with a pool"); split off, the
attribute would be encoded alone, losing what it qualifies. "with no",
"with zero" and "without" are negation cues, so "thrillers with no gore"
still splits. Frozen pairs ("rock and roll", "black and white", "drum and
bass", ...) and, in mixed-case text, "and" between two capitalised words in
mid-sentence (a title: "Pride and Prejudice") are not split either.

`score_decomposition` measures a decomposer against hand-annotated cases:
phrase-level precision and recall with polarity, a predicted phrase matching
an expected one of the same polarity when their content-token sets
(`content_tokens`) have a Jaccard index of at least 0.5, matched one to one,
best pairs first.

>>> [(p.text, p.sign, p.weight) for p in decompose("funny space adventures, nothing scary")]
[('funny space adventures', 'positive', 1.0), ('scary', 'negative', 1.0)]
>>> [(p.text, p.sign) for p in decompose("No horror or gore. Podcasts instead of audiobooks")]
[('horror', 'negative'), ('gore', 'negative'), ('podcasts', 'positive'), ('audiobooks', 'negative')]
>>> [(p.text, round(p.weight, 3)) for p in decompose("really love jazz, a bit of blues")]
[('jazz', 0.953), ('blues', 0.047)]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Temperature of the softmax that turns phrase intensities into weights.
TEMPERATURE = 1.0

#: The bounds of a phrase's intensity score (each cue counts one step).
MAX_INTENSITY = 2.0

#: The Jaccard index at which a predicted phrase matches an expected one.
MATCH_JACCARD = 0.5


class QueryError(ValueError):
    """A query that cannot be decomposed: empty, blank, too long, or without content words."""


@dataclass(frozen=True)
class Phrase:
    """One interest phrase of a query.

    Attributes
    ----------
    text
        The phrase as it should be encoded, lowercased ("funny space adventures").
    polarity
        +1 for something wanted, -1 for something not wanted.
    weight
        Its share of its polarity group: positive weights sum to 1, and so do
        negative weights (a softmax over the phrases' intensity scores).
    """

    text: str
    polarity: int
    weight: float

    def __post_init__(self) -> None:
        if not self.text or self.text != self.text.strip():
            raise ValueError(f"phrase text must be non-empty and stripped, got {self.text!r}")
        if self.polarity not in (1, -1):
            raise ValueError(f"polarity must be +1 or -1, got {self.polarity!r}")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"weight must be finite and > 0, got {self.weight!r}")

    @property
    def sign(self) -> str:
        """``"positive"`` or ``"negative"``."""
        return "positive" if self.polarity > 0 else "negative"


def composition_weights(intensities: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``intensities / temperature``: positive weights that sum to 1.

    Parameters
    ----------
    intensities
        One score per phrase; higher means more weight.
    temperature
        > 0; higher flattens the weights, lower sharpens them.

    Returns
    -------
    numpy.ndarray
        float64 weights in the order given (empty for no intensities).

    >>> composition_weights([0.0, 0.0]).tolist()
    [0.5, 0.5]
    >>> composition_weights([1.0, 0.0, -1.0]).round(3).tolist()
    [0.665, 0.245, 0.09]
    """
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    x = np.asarray(intensities, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"intensities must be one-dimensional, got shape {x.shape}")
    if x.size == 0:
        return np.empty(0, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("intensities must be finite")
    z = np.exp((x - x.max()) / temperature)
    return z / z.sum()


# --------------------------------------------------------------------------- lexicon

# Kinds of items the first pass produces.
_WORD, _HARD, _SOFT, _NEG, _POS, _INSTEAD, _INT, _FILLER, _KEEP, _OPENER = (
    "word", "hard", "soft", "neg", "pos", "instead", "int", "filler", "keep", "opener"
)  # fmt: skip

# Multi-word and single-word cues: words -> (kind, intensity step).
_CUES: dict[tuple[str, ...], tuple[str, float]] = {}


def _split(words: str) -> list[str]:
    """A word list written as one ``|``-separated string."""
    return words.split("|")


def _add(kind: str, step: float, *phrases: str) -> None:
    for phrase in phrases:
        _CUES[tuple(phrase.split())] = (kind, step)


_add(_HARD, 0, "but", "though", "however", "although", "-", "--", "—", "–")
_add(_SOFT, 0, "and", "or", "nor", "plus", "as well as", "along with", "&", "/", "and/or",
     "together with")  # fmt: skip
_add(_NEG, 0, "no", "not", "nothing", "none", "none of", "without", "with no", "with zero",
     "with nothing", "never", "except", "except for", "excluding", "other than", "avoid",
     "avoiding", "skip", "skipping", "anything but", "everything but", "less", "fewer",
     "no more", "not anymore", "neither", "don't", "dont", "do not", "doesn't", "doesnt",
     "does not", "didn't", "did not", "isn't", "is not", "aren't", "are not", "won't",
     "wouldn't", "not into", "not a fan of", "not big on", "no interest in", "dislike",
     "dislikes", "tired of", "sick of", "bored of", "bored with", "fed up with",
     "stay away from", "keep away from", "steer clear of")  # fmt: skip
_add(_NEG, 1, "hate", "hates", "detest", "detests", "loathe", "can't stand", "cannot stand",
     "absolutely no", "definitely no", "never ever")  # fmt: skip
_add(_NEG, -1, "not really", "not so much", "not too much", "not much", "not really into")
_add(_NEG, 0, "not too", "nothing too", "not overly", "not very", "nothing overly")
_add(_INSTEAD, 0, "instead of", "rather than", "in place of", "as opposed to")
_add(_POS, 0, "i want", "want", "wants", "wanna", "need", "needs", "i need", "show me",
     "give me", "find me", "get me", "send me", "recommend", "recommend me", "suggest",
     "suggest me", "looking for", "look for", "searching for", "search for", "in the mood for",
     "craving", "interested in", "keen on", "would like", "i'd like", "id like",
     "i would like", "enjoy", "enjoys", "likes", "liked", "a fan of", "fan of", "how about",
     "what about", "up for", "into", "trying to find", "help me find", "want to find",
     "looking to find", "on the lookout for")  # fmt: skip
_add(_POS, 1, "loves", "loved", "adore", "adores", "i'd love", "would love", "prefer",
     "prefers", "i prefer", "i'd prefer", "would prefer", "i'd rather", "would rather",
     "big fan of", "huge fan of", "obsessed with", "crazy about", "passionate about",
     "can't get enough of", "nothing but")  # fmt: skip
_add(_OPENER, 0, "just", "only", "instead")
_add(_INT, 1, "really", "very", "especially", "particularly", "mostly", "mainly", "primarily",
     "definitely", "absolutely", "totally", "extremely", "ideally", "above all",
     "more than anything", "most of all", "lots of", "a lot of", "plenty of", "tons of",
     "loads of", "more", "much more", "highly", "seriously", "incredibly")  # fmt: skip
_add(_INT, -1, "a bit", "a bit of", "a little", "a little bit", "a little bit of",
     "little bit of", "bit of", "maybe", "perhaps", "possibly", "sometimes", "occasionally",
     "the occasional", "an occasional", "kind of", "kinda", "sort of", "sorta", "somewhat",
     "slightly", "now and then", "every now and then", "once in a while", "from time to time",
     "every so often", "here and there", "a touch of", "a dash of", "if possible", "a few",
     "less so")  # fmt: skip
_add(_FILLER, 0, "please", "pls", "plz", "thanks", "thank you", "something", "somethin",
     "anything", "stuff", "some", "any", "lol", "haha", "etc", "i", "i'm", "im", "i am",
     "i've", "ive", "i'll", "me", "we", "we're", "us", "you", "he", "she", "they", "them",
     "him", "also", "at all", "whatsoever", "anymore", "any more", "as well", "can you",
     "could you", "would you", "will you", "all kinds of", "all sorts of", "any kind of",
     "some kind of", "any type of", "types of", "type of", "kinds of", "sorts of", "either",
     "rather", "good", "great", "nice", "decent", "awesome", "that kind of thing",
     "stuff like that", "things like that", "and so on", "or something", "or so", "too",
     "more of")  # fmt: skip
# Kept as content, never split: frozen pairs and comparisons.
_add(_KEEP, 0, "rock and roll", "rock n roll", "rock 'n' roll", "rock 'n roll", "drum and bass",
     "rhythm and blues", "black and white", "fish and chips", "mac and cheese",
     "macaroni and cheese", "salt and pepper", "sweet and sour", "hot and sour",
     "pros and cons", "arts and crafts", "bed and breakfast", "doom and gloom",
     "trial and error", "rise and fall", "law and order", "country and western",
     "hack and slash", "point and click", "cops and robbers", "bread and butter",
     "hide and seek", "cat and mouse", "sword and sorcery", "cloak and dagger",
     "surf and turf", "r and b", "b and b", "q and a", "less than", "more than",
     "fewer than", "no more than", "no less than", "not more than", "no longer than",
     "more or less", "hit or miss", "trick or treat", "sooner or later", "more and more",
     "all or nothing", "no-nonsense", "nothing short of")  # fmt: skip
_MAX_CUE = max(len(k) for k in _CUES)

# Cues that are verbs: the words before one may be its subject ("my son doesn't want").
_VERB_CUES = frozenset(
    tuple(c.split())
    for c in _split(
        "hate|hates|detest|detests|loathe|dislike|dislikes|don't|dont|doesn't|doesnt|didn't|"
        "won't|wouldn't|never|want|wants|need|needs|likes|liked|loves|loved|adore|adores|enjoy|"
        "enjoys|prefer|prefers|like|love|can't stand|cannot stand|do not|does not|did not|"
        "would like|would love|would prefer|would rather"
    )
)
_POSSESSIVES = frozenset({"my", "our", "his", "her", "their", "your"})

# Words after which "like", "love" and "into" are verbs (framing), not content.
_SUBJECTS = frozenset(
    _split(
        "i|we|you|he|she|they|kids|really|also|just|do|does|did|would|i'd|we'd|you'd|i'm|im|"
        "we're|they're|totally|absolutely|actually|usually|mostly|generally|kinda|definitely|"
        "still|always|especially|don't|doesn't|dont|didn't|never|not|am|are|is|be|been|"
        "currently|big|huge|typically|mainly|to|who|that"
    )
)
_VERB_LIKE = {"like": (_POS, 0.0), "love": (_POS, 1.0)}
# "love" before these is a noun ("love songs", "no love triangles").
_LOVE_NOUNS = frozenset(
    _split(
        "song|songs|story|stories|triangle|triangles|letter|letters|life|poem|poems|poetry|"
        "interest|interests|scene|scenes|affair|affairs|island|language|languages|hate|bombing"
    )
)

# Function words (a standard English stop list, contractions included): ignored by
# the scorer, and stripped from the edges of a phrase.
STOPWORDS = frozenset(
    _split(
        "a|about|above|after|again|against|all|am|an|and|any|are|as|at|be|because|been|before|"
        "being|below|between|both|but|by|can|could|did|do|does|doing|down|during|each|few|for|"
        "from|further|had|has|have|having|he|her|here|hers|herself|him|himself|his|how|i|if|in|"
        "into|is|it|its|itself|just|me|more|most|my|myself|no|nor|not|now|of|off|on|once|only|or|"
        "other|our|ours|ourselves|out|over|own|same|she|should|so|some|such|than|that|the|their|"
        "theirs|them|themselves|then|there|these|they|this|those|through|to|too|under|until|up|"
        "very|was|we|were|what|when|where|which|while|who|whom|why|will|with|would|you|your|"
        "yours|yourself|yourselves|s|t|d|ll|m|o|re|ve|y|don't|doesn't|didn't|isn't|aren't|wasn't|"
        "weren't|won't|wouldn't|can't|couldn't|shouldn't|i'm|i'd|i've|i'll|you're|you've|you'd|"
        "he's|she's|it's|we're|we've|they're|they've|that's|there's|what's|let's"
    )
)

# Stripped from a phrase's edges only (interior words stay: "hotel with a pool").
_EDGE = STOPWORDS - frozenset({"down", "up", "off", "out", "over", "under", "own", "same", "few"})
_EDGE |= frozenset(
    _split(
        "things|thing|ideas|suggestions|recommendations|options|much|many|lot|lots|kind|kinds|"
        "sort|sorts|type|types|another|every|either|instead|anymore|though|like|etc|please|"
        "whatever|that's|one|ones"
    )
)

# Marks a cue word kept inside a name, so edge stripping leaves it ("No Country for Old Men").
_NAME = "\x00"
_SENTENCE_END = frozenset({".", "!", "?", ";", ":"})
_HARD_PUNCT = frozenset({",", ";", ":", ".", "!", "?", "(", ")", "[", "]", "\n", "…"})
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['&.\-][A-Za-z0-9]+)*'?|[,;:.!?()\[\]/&…—–]|-{1,2}")
_NUMERIC = re.compile(r"(?:mid-)?\d+(?:s|'s|th|st|nd|rd)?")
_CONTENT_TOKEN = re.compile(r"[a-z0-9]+(?:['&\-][a-z0-9]+)*")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Item:
    kind: str
    words: tuple[str, ...] = ()
    step: float = 0.0


def _tokens(text: str) -> list[tuple[str, bool, bool]]:
    """``(lowercased token, capitalised, sentence-initial)`` for each token of ``text``."""
    out = []
    initial = True
    for raw in _TOKEN.findall(text):
        token = raw.lower().rstrip("'")
        if token.endswith("'s"):
            token = token[:-2]
        if not token:
            continue
        out.append((token, raw[:1].isupper(), initial))
        initial = token in _SENTENCE_END
    return out


def _verb_context(items: list[_Item], prev: str, nxt: tuple[str, bool, bool] | None) -> bool:
    """Whether "like"/"love" here is the framing verb, not content ("movies like X", "love songs").

    A verb after a subject or adverb ("I like", "really love"), or at the start of a
    clause or after filler ("love sci-fi, hate horror", "something like X").
    """
    if nxt is not None and nxt[0] in _LOVE_NOUNS:
        return False
    if prev in _SUBJECTS:
        return True
    return not items or items[-1].kind in (_HARD, _SOFT, _INT, _FILLER)


def _numeric_next(tokens: list[tuple[str, bool, bool]], i: int) -> bool:
    """Whether a number or decade follows the conjunction at ``i`` ("and early 2000s")."""
    j = i + 1
    if j < len(tokens) and tokens[j][0] in ("early", "late", "mid", "the"):
        j += 1
    return j < len(tokens) and bool(_NUMERIC.fullmatch(tokens[j][0]))


def _is_title_context(text: str) -> bool:
    """Whether capitals mean names here: mixed case, not all caps, not every word capitalised."""
    words = [w for w in re.findall(r"[A-Za-z]+", text) if len(w) > 3]
    if not words or text.upper() == text:
        return False
    return not all(w[:1].isupper() for w in words)


def _items(text: str) -> list[_Item]:
    """The first pass: words and separators to cues, longest multi-word cue first."""
    tokens = _tokens(text)
    names = _is_title_context(text)
    items: list[_Item] = []
    i = 0
    while i < len(tokens):
        word, cap, initial = tokens[i]
        if word in _HARD_PUNCT:
            items.append(_Item(_HARD))
            i += 1
            continue
        prev = tokens[i - 1][0] if i > 0 else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        # Mid-sentence capitalised words joined by a cue word are a name ("Pride and Prejudice",
        # "No Country for Old Men"): keep the cue word as content.
        if names and nxt is not None and nxt[1] and not nxt[2]:
            joins = word in {"and", "&", "of", "the", "for"}
            if (joins and i > 0 and tokens[i - 1][1] and not tokens[i - 1][2]) or (
                cap and not initial and word != "i" and (word,) in _CUES
            ):
                items.append(_Item(_WORD, (_NAME + word,)))  # not stripped as an edge word
                i += 1
                continue
        if word in ("and", "or", "to") and _NUMERIC.fullmatch(prev) and _numeric_next(tokens, i):
            items.append(_Item(_WORD, (word,)))  # "the 50s and 60s", "2 or 3 players"
            i += 1
            continue
        match = None
        for n in range(min(_MAX_CUE, len(tokens) - i), 0, -1):
            key = tuple(t[0] for t in tokens[i : i + n])
            if key in _CUES:
                match = key
                break
        if match is not None:
            kind, step = _CUES[match]
            if match == ("into",) and prev not in _SUBJECTS:
                kind, step = _WORD, 0.0
            items.append(_Item(kind, match, step))
            i += len(match)
            continue
        if word in _VERB_LIKE and _verb_context(items, prev, nxt):
            kind, step = _VERB_LIKE[word]
            items.append(_Item(kind, (word,), step))
        else:
            items.append(_Item(_WORD, (word,)))
        i += 1
    return items


def _closed_by_or(items: list[_Item], start: int) -> bool:
    """Whether the items after a comma at ``start`` continue a list closed by "or"/"nor"."""
    for item in items[start + 1 :]:
        if item.kind in (_NEG, _POS, _INSTEAD, _OPENER):
            return False
        if item.kind == _HARD:
            if item.words:  # "but", a dash: a new clause
                return False
            continue  # another comma of the list (or the sentence's end, checked below)
        if item.kind == _SOFT and item.words[-1] in ("or", "nor"):
            return True
    return False


@dataclass
class _Segment:
    polarity: int = 1
    inherited: float = 0.0
    own: float | None = None
    negated_here: bool = False
    words: list[str] = field(default_factory=list)

    def add_step(self, step: float) -> None:
        if step:
            self.own = (self.own or 0.0) + step

    @property
    def intensity(self) -> float:
        value = self.inherited if self.own is None else self.own
        return max(-MAX_INTENSITY, min(MAX_INTENSITY, value))


def _read(items: list[_Item]) -> list[tuple[list[str], int, float]]:
    """The second pass: segments of content words with their polarity and intensity."""
    raw: list[tuple[list[str], int, float]] = []
    seg = _Segment()

    def emit() -> None:
        if seg.words:
            raw.append((seg.words, seg.polarity, seg.intensity))

    def subject(item: _Item) -> bool:
        """Whether the words read so far are the subject of this verb cue ("my dad loves")."""
        words = seg.words
        return (
            item.words in _VERB_CUES
            and 1 < len(words) <= 3
            and words[0] in _POSSESSIVES
            and words[-1] not in ("that", "which", "who")
        )

    for index, item in enumerate(items):
        kind = item.kind
        if kind in (_WORD, _KEEP):
            seg.words.extend(" ".join(item.words).split())
        elif kind == _FILLER:
            continue
        elif kind == _INT:
            seg.add_step(item.step)
        elif kind == _HARD:
            carry = (
                not item.words and seg.polarity < 0 and _closed_by_or(items, index)
            )  # "no horror, gore or jump scares"
            emit()
            seg = _Segment(polarity=-1, inherited=seg.intensity) if carry else _Segment()
        elif kind == _SOFT:
            emit()
            seg = _Segment(polarity=seg.polarity, inherited=seg.intensity)
        elif kind == _NEG:
            if _has_content(seg.words):
                if not subject(item):
                    emit()
                seg = _Segment()
            seg.polarity = -1
            seg.negated_here = True
            seg.add_step(item.step)
        elif kind == _INSTEAD:
            if _has_content(seg.words):
                seg.polarity = 1
                emit()
            seg = _Segment(polarity=-1, negated_here=True)
        elif kind in (_POS, _OPENER):
            content = _has_content(seg.words)
            if kind == _OPENER and seg.polarity > 0 and content:
                continue  # "albums that just came out": not an opener
            if seg.negated_here and not content:
                continue  # "don't want", "never been a fan of": the negation's own verb
            if content:
                if not subject(item):
                    emit()
                seg = _Segment()
            seg.polarity = 1
            seg.add_step(item.step)
    emit()
    return raw


def _clean(words: list[str]) -> list[str]:
    """Drop function words at both edges (interior ones stay)."""
    start, end = 0, len(words)
    while start < end and words[start] in _EDGE:
        start += 1
    while end > start and words[end - 1] in _EDGE:
        end -= 1
    return words[start:end]


def _has_content(words: Sequence[str]) -> bool:
    return any(w not in STOPWORDS and w not in _EDGE for w in words)


def decompose(text: str, *, max_phrases: int = 8, max_chars: int = 500) -> tuple[Phrase, ...]:
    """Split a query into interest phrases with a polarity and a weight.

    Parameters
    ----------
    text
        The user's query, free English text.
    max_phrases
        At most this many phrases are kept, the first ones in the query.
    max_chars
        Longer text is refused (a query, not a document).

    Returns
    -------
    tuple[Phrase, ...]
        The phrases in the order they appear; each polarity group's weights
        sum to 1.

    Raises
    ------
    QueryError
        For text that is not a string, is empty or blank, is longer than
        ``max_chars``, or holds no content words ("please, something").

    >>> [(p.text, p.sign) for p in decompose("Comedies, but not romantic ones")]
    [('comedies', 'positive'), ('romantic comedies', 'negative')]
    """
    if max_phrases < 1:
        raise ValueError(f"max_phrases must be >= 1, got {max_phrases}")
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if not isinstance(text, str):
        raise QueryError(f"query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise QueryError("query is empty")
    if len(text) > max_chars:
        raise QueryError(f"query is {len(text)} characters long, the limit is {max_chars}")
    normal = re.sub(r"\s+", " ", text.replace("’", "'").replace("‘", "'")).strip()

    found: dict[tuple[str, int], float] = {}
    previous: list[str] = []
    for words, polarity, intensity in _read(_items(normal)):
        if previous and "ones" in words:
            words = [previous[-1] if w == "ones" else w for w in words]
        words = _clean(words)
        if not _has_content(words):
            continue
        previous = words
        key = (" ".join(words).replace(_NAME, ""), polarity)
        found[key] = max(found.get(key, -math.inf), intensity)
    if not found:
        raise QueryError(f"query has no content words: {text.strip()[:80]!r}")
    kept = list(found.items())[:max_phrases]

    weights: dict[tuple[str, int], float] = {}
    for polarity in (1, -1):
        group = [(key, score) for key, score in kept if key[1] == polarity]
        values = composition_weights([s for _, s in group], TEMPERATURE)
        weights.update({key: float(w) for (key, _), w in zip(group, values, strict=True)})
    return tuple(Phrase(t, p, weights[(t, p)]) for (t, p), _ in kept)


# --------------------------------------------------------------------------- scoring


def content_tokens(text: str) -> frozenset[str]:
    """The scorer's view of a phrase: lowercased words, stop words out, plurals stripped.

    >>> sorted(content_tokens("Horror movies with zombies"))
    ['horror', 'movy', 'zomby']
    >>> content_tokens("comedies") == content_tokens("comedy")
    True
    """
    out = set()
    for word in _CONTENT_TOKEN.findall(text.lower().replace("’", "'")):
        word = word.removesuffix("'s").rstrip("'")
        if not word or word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if word.endswith("ie"):
            word = word[:-2] + "y"
        out.add(word)
    return frozenset(out)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def match_count(predicted: Iterable[tuple[str, str]], expected: Iterable[tuple[str, str]]) -> int:
    """How many ``(text, sign)`` predictions match an expected phrase, one to one.

    A pair matches when the signs are equal and the content-token sets have a
    Jaccard index >= `MATCH_JACCARD`; pairs are taken best first (greedy).

    >>> match_count([("scary movies", "negative")], [("scary", "negative")])
    1
    >>> match_count([("scary", "positive")], [("scary", "negative")])
    0
    """
    pred = [(content_tokens(t), s) for t, s in predicted]
    gold = [(content_tokens(t), s) for t, s in expected]
    pairs = sorted(
        (
            (_jaccard(p, g), i, j)
            for i, (p, ps) in enumerate(pred)
            for j, (g, gs) in enumerate(gold)
            if ps == gs
        ),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    used_p: set[int] = set()
    used_g: set[int] = set()
    for score, i, j in pairs:
        if score < MATCH_JACCARD:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
    return len(used_p)


def score_decomposition(
    cases: Iterable[Mapping[str, object]],
    *,
    decomposer: Callable[[str], Sequence[Phrase]] = decompose,
) -> dict[str, float]:
    """Phrase-level precision, recall and F1 with polarity over annotated cases.

    Parameters
    ----------
    cases
        Mappings with ``"query"`` (str) and ``"phrases"``: a list of
        ``{"text": str, "polarity": "positive" | "negative"}`` (the lines of
        ``tests/fixtures/queries.jsonl``).
    decomposer
        The function under test; a query it refuses (`QueryError`) predicts
        no phrase.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (micro-averaged over all phrases),
        ``n`` (cases), ``tp``, ``predicted``, ``expected`` (phrase counts),
        ``exact`` (the share of cases with every phrase matched and none extra).

    >>> score = score_decomposition([{"query": "jazz, no pop", "phrases": [
    ...     {"text": "jazz", "polarity": "positive"}, {"text": "pop", "polarity": "negative"}]}])
    >>> score["precision"], score["recall"], score["n"], score["tp"]
    (1.0, 1.0, 1, 2)
    """
    n = tp = n_pred = n_gold = exact = 0
    for case in cases:
        query = case["query"]
        gold_phrases = case["phrases"]
        if not isinstance(query, str) or not isinstance(gold_phrases, list):
            raise ValueError(f"a case needs a 'query' string and a 'phrases' list: {case!r}")
        gold = [(str(p["text"]), str(p["polarity"])) for p in gold_phrases]
        for _, sign in gold:
            if sign not in ("positive", "negative"):
                raise ValueError(f"polarity must be 'positive' or 'negative', got {sign!r}")
        try:
            pred = [(p.text, p.sign) for p in decomposer(query)]
        except QueryError:
            pred = []
        hits = match_count(pred, gold)
        n += 1
        tp += hits
        n_pred += len(pred)
        n_gold += len(gold)
        exact += int(hits == len(pred) == len(gold))
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n": n,
        "tp": tp,
        "predicted": n_pred,
        "expected": n_gold,
        "exact": exact / n if n else 0.0,
    }
