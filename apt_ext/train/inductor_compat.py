"""A backport of one inductor fix that the compiled APT training step needs on torch releases
that lack it.

Inductor fuses a layer norm's backward into one "mix-order" reduction (row sums for the input
gradient, column sums for the weight and bias gradients) and then absorbs neighbouring nodes into
it. With left-spin residuals it absorbed each site's whole backward: on an H200 with torch 2.11 that
kernel made 18 loads per row and took 68 us a launch where plain's layer-norm backward of the same
shape takes 26 us (docs/left_spin.md). Newer inductor refuses such a fusion above
``torch._inductor.config.triton.mix_order_reduction_max_reads`` distinct reads (10 by default;
pytorch/pytorch#179423, found as an over-fusion regression on an H100). :func:`cap_mix_order_reads`
installs the same check where that setting does not exist yet, and does nothing where it does.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any

MAX_READS = 10  # newer inductor's default for mix_order_reduction_max_reads


def distinct_reads(nodes: Any) -> int:
    """How many buffers the scheduler nodes ``nodes`` read through memory dependencies (each
    buffer once, as newer inductor counts them)."""
    from torch._inductor.dependencies import MemoryDep

    names = {dep.name for node in nodes for dep in node.read_writes.reads if isinstance(dep, MemoryDep)}
    return len(names)


def _capped(can_fuse_with: Any, max_reads: int) -> Any:
    """``can_fuse_with`` of FusedMixOrderReductions, refusing a fusion that would read more than
    ``max_reads`` buffers."""

    @functools.wraps(can_fuse_with)
    def capped(self, other):
        if distinct_reads(itertools.chain(self.get_nodes(), other.get_nodes())) > max_reads:
            return False
        return can_fuse_with(self, other)

    capped.apt_max_reads = max_reads
    return capped


def cap_mix_order_reads(max_reads: int = MAX_READS) -> str:
    """Make inductor refuse to grow a mix-order reduction past ``max_reads`` distinct reads.

    Returns what it did: ``"native"`` (this torch has ``triton.mix_order_reduction_max_reads``:
    left as configured), ``"patched"`` (the check installed, or its limit changed), or
    ``"absent"`` (this torch has no mix-order reductions). Process-wide and idempotent; affects
    graphs compiled afterwards. Models without such over-fused kernels compile as before (plain
    layer-norm backwards read 5 buffers)."""
    if isinstance(max_reads, bool) or not isinstance(max_reads, int) or max_reads < 1:
        raise ValueError(f"max_reads: expected a positive int, got {max_reads!r}")
    from torch._inductor import config, scheduler

    if hasattr(config.triton, "mix_order_reduction_max_reads"):
        return "native"
    cls = getattr(scheduler, "FusedMixOrderReductions", None)
    if cls is None or not hasattr(cls, "can_fuse_with"):
        return "absent"
    original = cls.can_fuse_with
    if hasattr(original, "apt_max_reads"):  # ours from an earlier call: replace, never stack
        original = original.__wrapped__
    cls.can_fuse_with = _capped(original, max_reads)
    return "patched"
