"""``LeftSpinParams``: the six hyperparameters of the left-spin residual (docs/contract.md §4) and their
defaults, in one record used by the op wrapper, ``apt_ext.nn.LeftSpinResidual``, the APT model
config and ``apt-ext train``."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LeftSpinParams:
    """alpha: gate strength; tau: threshold of the softplus; beta: weight of the previous site's
    phi (the "inertia"); w1, w2: weights of the relative size d and the acceleration a; eps:
    added to the norms' denominators. All finite, eps >= 0 (ValueError naming the field)."""

    alpha: float = 0.5
    tau: float = 0.3
    beta: float = 0.7
    w1: float = 1.0
    w2: float = 0.5
    eps: float = 1e-6

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{f.name}: expected a finite number, got {v!r}")
            object.__setattr__(self, f.name, float(v))
        if self.eps < 0:
            raise ValueError(f"eps: expected a finite number >= 0, got {self.eps!r}")

    def as_tuple(self) -> tuple[float, float, float, float, float, float]:
        """(alpha, tau, beta, w1, w2, eps): the order of the op's schema."""
        return (self.alpha, self.tau, self.beta, self.w1, self.w2, self.eps)


DEFAULTS = LeftSpinParams()

# What torch.compile traces at a LeftSpinResidual site (apt_ext.nn.LeftSpinResidual): the fused
# op, or the same math in torch operations that inductor can fuse with neighbouring kernels.
COMPILED_FORMS = ("op", "decomposed")
