"""Autopoietic attention: a self-generated low-rank correction added after SDPA (docs/contract.md §7).

For the attention input x [B, T, D] and per head h (head size d_h, rank r):
    m_t   = mean of the real (non-padding) x_s with s <= t       (causal prefix mean)
    delta = sigmoid(W_g m_t + b_g) ⊙ (x_t U_h V_h)                 [B, T, H, d_h]
The attention block combines its SDPA output h with delta as h + g·delta, g the left-spin gate
(d = ||delta|| / ||h|| per head and token, no acceleration term), or h + alpha·tanh(tau)·delta
when left-spin is off. Nothing in it looks at tokens after t, so causal attention stays causal.
"""
from __future__ import annotations

import torch
from torch import nn

from apt_ext.model.prefix_sum import prefix_mean, prefix_sum


class AutopoieticCorrection(nn.Module):
    """Produces delta [B, T, H, d_h] from x [B, T, D] and its causal prefix mean m [B, T, D].

    Token-major like x and like the attention output the output projection reads (SDPA's
    [B, H, T, d_h] transposed), so the gate, the product and the combination with the attention
    output need no transposing copies.
    """

    def __init__(self, d_model: int, num_heads: int, rank: int) -> None:
        super().__init__()
        self.num_heads, self.rank, self.head_dim = num_heads, rank, d_model // num_heads
        self.U = nn.Linear(d_model, num_heads * rank, bias=False)          # x_t U_h for every head
        self.V = nn.Parameter(torch.empty(num_heads, rank, self.head_dim))  # V_h
        self.gate = nn.Linear(d_model, d_model)                             # W_g, b_g

    @staticmethod
    def prefix_mean(x: torch.Tensor, valid: torch.Tensor | None,
                    state: tuple[torch.Tensor, torch.Tensor] | None
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal mean of the valid rows of x (float32 sums, through prefix_sum.py's ops, which
        torch.compile keeps opaque). Without a mask or state (the training step) it is one op,
        ``prefix_mean``: on CUDA one Triton pass reading x and writing m in x's dtype.

        x [B, T, D]; valid [B, T] bool or None (all valid); state (sum [B, D], count [B]) of
        earlier positions (KV-cache decoding) or None. Returns (m [B, T, D] in x's dtype, new state).
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
        return m.to(x.dtype), (csum[:, -1], cnt[:, -1])

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        xu = self.U(x).view(b, t, self.num_heads, self.rank)
        xuv = torch.einsum("bthr,hrd->bthd", xu, self.V.to(xu.dtype))
        g = torch.sigmoid(self.gate(m)).view(b, t, self.num_heads, self.head_dim)
        return g * xuv
