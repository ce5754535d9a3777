"""Attention heads as channel groups. A multi-head self-attention of timm's form has a `qkv` Linear writing
3·H·d channels, read as (3, H, d) (query, key, value; H = `num_heads` heads of `head_dim` d), and a `proj`
Linear reading the H·d concatenated head outputs. Torch-Pruning's dependency graph maps qkv's 3·H·d outputs one to
one onto proj's H·d inputs through that reshape, which is wrong; the channel pruner drops that group and puts a
head group in its place: group channel h is head h, i.e. qkv rows s·H·d + h·d + j (s = q, k, v; j < d) and proj
columns h·d + j. Removing head h slices exactly those and lowers `num_heads`, so the module stays consistent
(scaled dot-product attention per head does not depend on the other heads). Criteria score qkv's rows; a head's
score is the sum over its 3·d rows (`ChannelPruner.group_scores`). torchvision's nn.MultiheadAttention keeps its
projections in a raw `in_proj_weight` read functionally: no head group (its channels are kept whole)."""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


def attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: module} of every attention of timm's form: Linear `qkv` (3·H·d outputs), Linear `proj`
    (H·d inputs), int `num_heads` H and `head_dim` d."""
    out = {}
    for name, m in model.named_modules():
        qkv, proj = getattr(m, "qkv", None), getattr(m, "proj", None)
        heads, dim = getattr(m, "num_heads", None), getattr(m, "head_dim", None)
        if (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(heads, int)
                and isinstance(dim, int) and qkv.out_features == 3 * heads * dim and proj.in_features == heads * dim):
            out[name] = m
    return out


def unsupported(attn: nn.Module) -> str | None:
    """Why the heads of `attn` cannot be removed by slicing qkv and proj alone (a gate or a normalisation over
    all heads' outputs), or None."""
    if getattr(attn, "gate", None) is not None:
        return "its output gate (a Linear over all heads) would need slicing too"
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
        return "its normalisation over the concatenated heads (scale_norm) mixes them"
    return None


def qkv_rows(attn: nn.Module) -> tuple[list[int], list[int]]:
    """(qkv output rows, the head each belongs to): row s·H·d + h·d + j belongs to head h."""
    h, d = attn.num_heads, attn.head_dim
    rows = [s * h * d + k * d + j for s in range(3) for k in range(h) for j in range(d)]
    return rows, [(r % (h * d)) // d for r in rows]


def head_scores(row_scores: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Each head's score from scores of qkv's 3·H·d output rows: s_h = Σ_{s ∈ q,k,v} Σ_{j<d} row[s·H·d + h·d + j]
    (the rule `ChannelPruner.group_scores` applies to a head group)."""
    if row_scores.numel() % (3 * num_heads):
        raise ValueError(f"row_scores: {row_scores.numel()} rows are not 3 x {num_heads} heads x head_dim")
    return row_scores.reshape(3, num_heads, -1).sum((0, 2))


def proj_columns(attn: nn.Module) -> tuple[list[int], list[int]]:
    """(proj input columns, the head each belongs to): column h·d + j belongs to head h."""
    cols = list(range(attn.num_heads * attn.head_dim))
    return cols, [c // attn.head_dim for c in cols]


def remove_heads(attn: nn.Module, drop: list[int]) -> None:
    """Physically remove heads `drop` of `attn`: their qkv rows (and biases), their proj columns; num_heads (and
    timm's attn_dim) lowered to match."""
    gone = set(drop)
    rows, of = qkv_rows(attn)
    tp.prune_linear_out_channels(attn.qkv, [r for r, k in zip(rows, of) if k in gone])
    cols, of = proj_columns(attn)
    tp.prune_linear_in_channels(attn.proj, [c for c, k in zip(cols, of) if k in gone])
    attn.num_heads -= len(gone)
    if hasattr(attn, "attn_dim"):
        attn.attn_dim = attn.num_heads * attn.head_dim
