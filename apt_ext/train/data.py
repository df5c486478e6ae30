"""Training text, tokenizers and deterministic batches.

The built-in corpus is the English text of Python's own documentation topics
(``pydoc_data.topics.topics``, shipped with every CPython). Tokenizers: byte-level (256 ids,
nothing to train) or byte-level BPE trained with the ``tokenizers`` library. Batches are a pure
function of (seed, step, micro-step, rank), so the step number is the whole data position and a
resumed run sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from apt_ext.train.config import ConfigError


def builtin_corpus() -> str:
    """Python's documentation topics as one English text (about 0.7 MB)."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k].strip() for k in sorted(topics))


def load_text(paths: list[str] | None) -> str:
    """The concatenated text of ``paths`` (UTF-8 files), or the built-in corpus when empty/None.

    Raises ConfigError("data", ...) for a path that is not a readable file, a file that is not
    UTF-8 text (binary data), or files with no text at all."""
    if not paths:
        return builtin_corpus()
    parts = []
    for p in paths:
        f = Path(p)
        if not f.is_file():
            raise ConfigError("data", f"{p} {'is a directory' if f.is_dir() else 'does not exist'}")
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise ConfigError("data", f"cannot read {p}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("data", f"{p} is not UTF-8 text (byte {exc.start} is not valid UTF-8)") from None
        if "\x00" in text:
            raise ConfigError("data", f"{p} is not text (it contains NUL bytes: binary data?)")
        parts.append(text)
    text = "\n\n".join(parts)
    if not text.strip():
        raise ConfigError("data", f"{', '.join(paths)}: no text (empty or only whitespace)")
    return text


def _require_tokenizers() -> None:
    """ConfigError("tokenizer", ...) saying how to get the ``tokenizers`` package when it is missing."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        raise ConfigError("tokenizer", "'bpe' needs the tokenizers package, which is not installed: "
                                       "pip install tokenizers (or use the 'byte' tokenizer)") from None


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"apt_ext_tokenizer": "byte"}))


class BPETokenizer:
    """Byte-level BPE (the ``tokenizers`` library), trained on the training text."""

    kind = "bpe"

    def __init__(self, tok) -> None:
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int = 2048) -> "BPETokenizer":
        if vocab_size < 257:
            raise ValueError(f"vocab_size: a byte-level BPE needs > 256 entries, got {vocab_size}")
        _require_tokenizers()
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        chunks = text.split("\n\n")
        tok.train_from_iterator(chunks, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([int(i) for i in ids])

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))


def make_tokenizer(kind: str, text: str, vocab_size: int = 2048) -> ByteTokenizer | BPETokenizer:
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    raise ValueError(f"tokenizer: expected 'byte' or 'bpe', got {kind!r}")


def load_tokenizer(path: str | Path) -> ByteTokenizer | BPETokenizer:
    raw = json.loads(Path(path).read_text())
    if raw.get("apt_ext_tokenizer") == "byte":
        return ByteTokenizer()
    _require_tokenizers()
    from tokenizers import Tokenizer
    return BPETokenizer(Tokenizer.from_file(str(path)))


class TokenData:
    """Token stream split into train (first 90%) and validation (last 10%) parts."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, val_fraction: float = 0.1) -> None:
        if tokens.dim() != 1:
            raise ValueError("tokens: expected a 1-D tensor")
        n_val = max(int(len(tokens) * val_fraction), seq_len + 2)
        if len(tokens) - n_val < seq_len + 2:
            raise ConfigError("data", f"{len(tokens)} tokens are too few for seq_len={seq_len} (the validation "
                                      f"part alone takes {n_val}); give more text or a shorter seq_len")
        self.train, self.val, self.seq_len = tokens[:-n_val], tokens[-n_val:], seq_len

    def batch(self, split: str, batch_size: int, seed: int, *index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 [batch_size, seq_len], y = x shifted by one; deterministic in
        (seed, *index), e.g. index = (step, micro_step, rank)."""
        src = self.train if split == "train" else self.val
        key = hashlib.blake2b(f"{seed}|{split}|{index}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(key, "little") & 0x7FFFFFFFFFFFFFFF)
        starts = torch.randint(0, len(src) - self.seq_len - 1, (batch_size,), generator=g)
        rows = torch.stack([src[s:s + self.seq_len + 1] for s in starts.tolist()]).long()
        return rows[:, :-1], rows[:, 1:]
