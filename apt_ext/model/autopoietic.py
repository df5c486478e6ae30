"""Autopoietic attention: a self-generated low-rank correction added after SDPA (docs/contract.md §7).

For the attention input x [B, T, D] and per head h (head size d_h, rank r):
    m_t   = mean of the real (non-padding) x_s with s <= t       (causal prefix mean)
    delta = sigmoid(W_g m_t + b_g) ⊙ (x_t U_h V_h)                 [B, T, H, d_h]
The attention block combines its SDPA output h with delta as h + g·delta, g the left-spin gate
(d = ||delta|| / ||h|| per head and token, no acceleration term), or h + alpha·tanh(tau)·delta
when left-spin is off. Nothing in it looks at tokens after t, so causal attention stays causal.

W_g is linear, so W_g m_t + b_g is the prefix mean of W_g x_s + b_g (before the first real
token, where no row is averaged, it is b_g either way). With ``fuse`` (the model config's
``autopoietic_fused_projection``; off by default: on the H100 the compiled GPT-2-small step was
slower with it, 1.155x against 1.146x plain, docs/model.md), in the training step (autograd
recording, no KV cache), where the attention's q/k/v projection, W_g and U are plain
``nn.Linear`` layers (no FP4 or hooked layer, whose own forward must run), one matmul of x gives
q/k/v, x W_gᵀ + b_g and x U (:meth:`AutopoieticCorrection.project`) and the mean is taken of
x W_gᵀ + b_g instead of x: the gate's matmul on m and U's narrow one (H r columns) are folded into
the q/k/v matmul in the forward and in both backward products, and b_g's gradient into the q/k/v
bias's reduction.
Without autograd (inference, generation with the KV cache) each layer runs its own call, so that
a forward matches, bit for bit, the same model with layers paged in by hooks
(apt_ext.vgpu.offload), and a cache's running sums are always of x.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apt_ext.model.prefix_sum import prefix_mean, prefix_sum


class AutopoieticCorrection(nn.Module):
    """Produces delta [B, T, H, d_h] from x [B, T, D] in two calls: :meth:`project` (x U and the
    gate's source, with q/k/v where they fuse), then the module itself (the prefix mean and delta).

    Token-major like x and like the attention output the output projection reads (SDPA's
    [B, H, T, d_h] transposed), so the gate, the product and the combination with the attention
    output need no transposing copies.
    """

    def __init__(self, d_model: int, num_heads: int, rank: int, fuse: bool = False) -> None:
        super().__init__()
        self.num_heads, self.rank, self.head_dim = num_heads, rank, d_model // num_heads
        self.fuse = fuse  # may project() fuse q/k/v, W_g and U (module docstring)
        self.U = nn.Linear(d_model, num_heads * rank, bias=False)          # x_t U_h for every head
        self.V = nn.Parameter(torch.empty(num_heads, rank, self.head_dim))  # V_h
        self.gate = nn.Linear(d_model, d_model)                             # W_g, b_g

    def fuses_with(self, qkv: nn.Module, cached: bool = False) -> bool:
        """Whether :meth:`project` runs ``qkv``, W_g and U as one matmul: ``fuse`` set, autograd
        recording, no KV cache, and all three plain ``nn.Linear`` layers without forward hooks on
        one device and dtype (module docstring)."""
        mods = (qkv, self.gate, self.U)
        return self.fuse and not cached and torch.is_grad_enabled() and all(
            type(mod) is nn.Linear and not mod._forward_pre_hooks and not mod._forward_hooks
            and mod.weight.device == qkv.weight.device and mod.weight.dtype == qkv.weight.dtype for mod in mods)

    def project(self, x: torch.Tensor, qkv: nn.Module, cached: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """(qkv(x) [B, T, 3D], the gate's source [B, T, D], x U [B, T, H r], projected) for x
        [B, T, D]; ``cached``: the attention runs with a KV cache. With :meth:`fuses_with`, one
        matmul of x whose outputs are split from one [B, T, 3D + D + H r] tensor, and the gate's
        source is x W_gᵀ + b_g (``projected`` True: its prefix mean is the gate's pre-activation);
        else each layer's own call, and the source is x in the dtype the q/k/v matmul reads
        under autocast (its prefix mean is m, which the gate's layer takes)."""
        d = x.shape[-1]
        if self.fuses_with(qkv, cached):
            w = torch.cat([qkv.weight, self.gate.weight, self.U.weight])
            zeros = self.gate.bias.new_zeros
            bias = torch.cat([qkv.bias if qkv.bias is not None else zeros(3 * d), self.gate.bias,
                              zeros(w.shape[0] - 4 * d)])
            # split, not slices: the slices' backward (slice_scatter into one gradient) fails in
            # inductor's reinplacing pass (torch 2.13 on the CPU trace); split's is one cat
            qkv_out, src, xu = F.linear(x, w, bias.to(w.dtype)).split([3 * d, d, w.shape[0] - 4 * d], dim=-1)
            return qkv_out, src, xu, True
        dev = x.device.type
        # under autocast the mean reads x in the autocast dtype (the same cast the q/k/v matmul
        # reads, summed in float32), so neither the mean's input nor its output is a float32 copy
        src = x.to(torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else x
        return qkv(x), src, self.U(x), False

    @staticmethod
    def prefix_mean(x: torch.Tensor, valid: torch.Tensor | None,
                    state: tuple[torch.Tensor, torch.Tensor] | None, empty: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal mean of the valid rows of x (float32 sums, through prefix_sum.py's ops, which
        torch.compile keeps opaque). Without a mask or state (the training step) it is one op,
        ``prefix_mean``: on CUDA one Triton pass reading x (rows at any stride) and writing m in
        x's dtype.

        x [B, T, D]; valid [B, T] bool or None (all valid); state (sum [B, D], count [B]) of
        earlier positions (KV-cache decoding) or None; ``empty`` [D]: m where no row is averaged
        yet (before the first valid row), None: 0. Returns (m [B, T, D] in x's dtype, new state).
        """
        if valid is None and state is None:
            m, total = prefix_mean(x)
            count = torch.full((x.shape[0],), float(x.shape[1]), device=x.device, dtype=torch.float32)
            return m, (total.float(), count)
        if valid is None:
            csum = prefix_sum(x.float())
            cnt = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float32).expand(x.shape[0], -1)
        else:
            v = valid.to(torch.float32)
            csum = prefix_sum(x.float() * v.unsqueeze(-1))
            cnt = prefix_sum(v)
        if state is not None:
            csum = csum + state[0].unsqueeze(1)
            cnt = cnt + state[1].unsqueeze(1)
        m = csum / cnt.clamp_min(1.0).unsqueeze(-1)
        if empty is not None:
            m = torch.where(cnt.unsqueeze(-1) > 0, m, empty.to(m.dtype))
        return m.to(x.dtype), (csum[:, -1], cnt[:, -1])

    def forward(self, xu: torch.Tensor, src: torch.Tensor, projected: bool, valid: torch.Tensor | None = None,
                state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(delta [B, T, H, d_h], the prefix mean's new state) from :meth:`project`'s x U
        [B, T, H r], gate source [B, T, D] and ``projected``; ``valid`` and ``state`` as
        :meth:`prefix_mean` takes them."""
        b, t, _ = xu.shape
        mean, new_state = self.prefix_mean(src, valid, state, empty=self.gate.bias if projected else None)
        pre = mean if projected else self.gate(mean)  # the gate's pre-activation W_g m + b_g
        xuv = torch.einsum("bthr,hrd->bthd", xu.view(b, t, self.num_heads, self.rank), self.V.to(xu.dtype))
        return torch.sigmoid(pre).view(b, t, self.num_heads, self.head_dim) * xuv, new_state
