"""What a saved APT model directory holds, read without building the model: where the
``save_pretrained`` files are, its tokenizer, and which Linear layers were saved in FP4.

A checkpoint directory is what ``apt-ext train`` / ``apt-ext demo`` write (``DIR/model/`` from
``APTModel.save_pretrained`` plus ``DIR/tokenizer.json``) or a ``save_pretrained`` directory
itself (tokenizer.json inside it or next to it). ``APTModel.from_pretrained`` and
``apt_ext.cloud.LocalModel.from_checkpoint`` (``apt-ext serve``, ``apt-ext generate``) read it
through these functions.
"""
from __future__ import annotations

from pathlib import Path

# safetensors dtype names of each FP4 format's block scales (one per format: apt_ext.fp4.format;
# tests/test_seed_api.py saves and reloads every format)
_SCALE_DTYPE_TO_FORMAT = {"F8_E4M3": "nvfp4", "U8": "mxfp4", "F32": "nf4"}


def resolve_model_dir(directory: str | Path) -> Path:
    """The ``save_pretrained`` directory inside a checkpoint directory (``DIR`` or ``DIR/model``)."""
    d = Path(directory)
    for candidate in (d, d / "model"):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    raise FileNotFoundError(f"checkpoint: {d} holds neither config.json + model.safetensors nor a "
                            "model/ folder with them (write one with apt-ext train or APTModel.save_pretrained)")


def find_tokenizer(model_dir: Path):
    """The tokenizer saved with the model (``tokenizer.json`` in ``model_dir`` or its parent), or None."""
    from apt_ext.train.data import load_tokenizer
    for candidate in (model_dir / "tokenizer.json", model_dir.parent / "tokenizer.json"):
        if candidate.is_file():
            return load_tokenizer(candidate)
    return None


def fp4_layers(weights_file: Path) -> dict[str, str]:
    """fqn -> FP4 format of every ``FP4Linear`` saved in ``weights_file`` (a ``.packed`` key;
    the format is read from the dtype of its ``.scales``)."""
    from safetensors import safe_open
    out: dict[str, str] = {}
    with safe_open(str(weights_file), framework="pt") as f:
        keys = set(f.keys())
        for key in keys:
            if key.endswith(".packed") and key.removesuffix(".packed") + ".scales" in keys:
                fqn = key.removesuffix(".packed")
                dtype = f.get_slice(fqn + ".scales").get_dtype()
                if dtype not in _SCALE_DTYPE_TO_FORMAT:
                    raise ValueError(f"checkpoint: {fqn}.scales has dtype {dtype}, which is no FP4 format's "
                                     f"({sorted(_SCALE_DTYPE_TO_FORMAT)})")
                out[fqn] = _SCALE_DTYPE_TO_FORMAT[dtype]
    return out
