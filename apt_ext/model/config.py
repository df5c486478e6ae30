"""``APTModelConfiguration``: every field of the APT model, validated, JSON round-trippable."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from apt_ext.fp4.format import DEFAULT_FORMAT, FORMAT_NAMES
from apt_ext.left_spin.params import COMPILED_FORMS, DEFAULTS as LEFT_SPIN, LeftSpinParams


@dataclass
class APTModelConfiguration:
    """Configuration of :class:`apt_ext.model.APTModel` (docs/contract.md §7).

    Architecture: ``vocab_size``, ``d_model``, ``num_heads``, ``d_ff``, ``num_encoder_layers``,
    ``num_decoder_layers``, ``decoder_only`` (True: GPT-style ``model(input_ids)``, the encoder
    is not built; False: ``model(src, tgt)``), ``max_seq_len`` (learned absolute positions),
    ``dropout`` (embeddings, attention probabilities, residual branches), ``tie_embeddings``
    (output head shares the token embedding), ``bias`` (bias in Linear layers),
    ``layer_norm_eps``; ``pad_token_id`` (None: no padding is inferred from ids; pass
    ``attention_mask`` instead), ``bos_token_id``/``eos_token_id`` (generation defaults).

    Left-spin residuals (docs/contract.md §4): ``use_left_spin`` and ``left_spin_alpha/tau/beta/w1/w2/eps``
    (defaults from ``apt_ext.left_spin.LeftSpinParams``; ``left_spin_params`` returns them as one);
    ``left_spin_compiled_form``: what torch.compile traces at each site, ``"decomposed"`` (default:
    torch operations inductor can fuse; ``apt_ext.nn.LeftSpinResidual``) or ``"op"`` (the fused op).
    Autopoietic attention: ``use_autopoietic``, ``autopoietic_rank`` (rank r of U·V per head),
    ``autopoietic_fused_projection`` (default False; True: in the training step q/k/v, the gate's W_g
    and U run as one matmul of x, apt_ext/model/autopoietic.py, measured slower on the H100).
    DBC-DAC gradient conditioning: ``use_dbc_dac``, ``dbc_min_numel``, ``dbc_rank_ratio``,
    ``dbc_eps``, ``dbc_seed``. FP4: ``use_fp4`` = None/False (off), True (= "nvfp4") or a
    format name; the model's Linear layers become ``apt_ext.nn.FP4Linear`` (frozen 4-bit
    weights) right after initialisation.
    """

    vocab_size: int = 32000
    d_model: int = 512
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    d_ff: int = 2048
    decoder_only: bool = False
    max_seq_len: int = 1024
    dropout: float = 0.1
    tie_embeddings: bool = True
    bias: bool = True
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    use_autopoietic: bool = True
    autopoietic_rank: int = 8
    autopoietic_fused_projection: bool = False
    use_left_spin: bool = True
    left_spin_alpha: float = LEFT_SPIN.alpha
    left_spin_tau: float = LEFT_SPIN.tau
    left_spin_beta: float = LEFT_SPIN.beta
    left_spin_w1: float = LEFT_SPIN.w1
    left_spin_w2: float = LEFT_SPIN.w2
    left_spin_eps: float = LEFT_SPIN.eps
    left_spin_compiled_form: str = "decomposed"
    use_dbc_dac: bool = False
    dbc_min_numel: int = 4096
    dbc_rank_ratio: float = 0.25
    dbc_eps: float = 1e-8
    dbc_seed: int = 0
    use_fp4: bool | str | None = None
    init_std: float = 0.02
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_heads", "d_ff", "max_seq_len", "autopoietic_rank",
                     "dbc_min_numel"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("num_encoder_layers", "num_decoder_layers"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.num_decoder_layers < 1:
            raise ValueError(f"num_decoder_layers: expected >= 1, got {self.num_decoder_layers}")
        if not self.decoder_only and self.num_encoder_layers < 1:
            raise ValueError("num_encoder_layers: expected >= 1 for an encoder-decoder model "
                             "(set decoder_only=True for a decoder-only model)")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model: expected a multiple of num_heads={self.num_heads}, got {self.d_model}")
        for name in ("decoder_only", "tie_embeddings", "bias", "use_autopoietic", "autopoietic_fused_projection",
                     "use_left_spin", "use_dbc_dac"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        for name in ("dropout", "layer_norm_eps", "left_spin_alpha", "left_spin_tau", "left_spin_beta",
                     "left_spin_w1", "left_spin_w2", "left_spin_eps", "dbc_rank_ratio", "dbc_eps", "init_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name}: expected a finite float, got {v!r}")
            setattr(self, name, float(v))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected 0 <= dropout < 1, got {self.dropout}")
        if self.left_spin_compiled_form not in COMPILED_FORMS:
            raise ValueError(f"left_spin_compiled_form: expected one of {COMPILED_FORMS}, "
                             f"got {self.left_spin_compiled_form!r}")
        if not 0.0 <= self.left_spin_beta <= 1.0:
            raise ValueError(f"left_spin_beta: expected in [0, 1], got {self.left_spin_beta}")
        if self.left_spin_alpha < 0 or self.left_spin_eps <= 0 or self.layer_norm_eps <= 0:
            raise ValueError("left_spin_alpha must be >= 0, left_spin_eps and layer_norm_eps > 0")
        if not 0.0 < self.dbc_rank_ratio <= 1.0:
            raise ValueError(f"dbc_rank_ratio: expected in (0, 1], got {self.dbc_rank_ratio}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            v = getattr(self, name)
            if v is not None:
                _check_int(name, v, minimum=0)
                if v >= self.vocab_size:
                    raise ValueError(f"{name}: expected < vocab_size={self.vocab_size}, got {v}")
        if self.use_fp4 is True:
            self.use_fp4 = DEFAULT_FORMAT
        elif self.use_fp4 is False:
            self.use_fp4 = None
        if self.use_fp4 is not None and self.use_fp4 not in FORMAT_NAMES:
            raise ValueError(f"use_fp4: expected None, a bool or one of {FORMAT_NAMES}, got {self.use_fp4!r}")
        _check_int("dbc_seed", self.dbc_seed, minimum=0)

    @property
    def left_spin_params(self) -> LeftSpinParams:
        """The six left-spin hyperparameters as one record (what the residual sites use)."""
        return LeftSpinParams(self.left_spin_alpha, self.left_spin_tau, self.left_spin_beta, self.left_spin_w1,
                              self.left_spin_w2, self.left_spin_eps)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "APTModelConfiguration":
        if not isinstance(d, dict):
            raise TypeError(f"d: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config: unknown fields {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "APTModelConfiguration":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _check_int(name: str, v, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name}: expected an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name}: expected >= {minimum}, got {v}")
