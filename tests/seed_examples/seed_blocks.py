"""The Python blocks of the original design document, read from the document itself.

``APT-Transformer-summary.md`` here is a byte-identical copy of the design document as the
project received it (``../shared/seed/`` in the workspace; SHA-256 pinned below, so an edited
copy fails the tests). ``block(n)`` is the text of its n-th ```python block (1-based, in
document order) and ``run_block(n, **names)`` executes that text unchanged, in a fresh
namespace holding only ``names`` (what the block leaves undefined: a ``model``, token tensors,
a dataloader).
"""
from __future__ import annotations

import hashlib
import re
import sys
import types
from pathlib import Path

SEED = Path(__file__).with_name("APT-Transformer-summary.md")
SEED_SHA256 = "6c76fa303872076a8e5d20a5c2e3367062eaed0c66969726a3b30ef214bebb80"
N_BLOCKS = 20
_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def seed_text() -> str:
    data = SEED.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SEED_SHA256:
        raise AssertionError(f"{SEED.name}: SHA-256 {digest} differs from the design document's {SEED_SHA256}; "
                             "the examples must be tested as the document has them")
    return data.decode("utf-8")


def blocks() -> list[str]:
    return _BLOCK.findall(seed_text())


def block(n: int) -> str:
    """The text of the n-th ```python block (1-based)."""
    return blocks()[n - 1]


def run_block(n: int, **names) -> dict:
    """Execute block ``n`` verbatim as the body of a fresh module (registered in sys.modules, as
    a script's ``__main__`` would be) whose namespace holds only ``names``; returns the namespace."""
    module = types.ModuleType(f"seed_block_{n}")
    module.__dict__.update(names)
    sys.modules[module.__name__] = module
    exec(compile(block(n), f"<design document, python block {n}>", "exec"), module.__dict__)
    return module.__dict__
