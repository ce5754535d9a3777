"""The layers of lowrank.py's factorised forms, each an nn.Sequential of plain nn.Conv2d / nn.Linear: truncated
SVD (`svd_layers`), Tucker-2 (`tucker2` by HOOI, `tucker2_layers`) and CP (`cp4` by ALS, `cp_layers`); tensorly is
used here only. lowrank.py chooses the ranks and imports everything below (`lowrank.svd_layers` etc.)."""
from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
from torch import nn


# ----------------------------------------------------------------------------------------------- tensorly adapter
# The only place that touches tensorly: its PyTorch backend keeps the tensors on the weight's device.

def tucker2(weight: torch.Tensor, ranks: tuple[int, int], n_iter: int = 10) -> tuple[torch.Tensor, ...]:
    """Tucker-2 of a conv kernel over its output / input channel modes: (core, U_out, U_in) with orthonormal
    U_out (C_out x r_out), U_in (C_in x r_in) and core = W ×₀ U_outᵀ ×₁ U_inᵀ, so W ≈ core ×₀ U_out ×₁ U_in.
    n_iter = 0 is the truncated HOSVD; n_iter > 0 runs that many HOOI sweeps (tensorly.partial_tucker)."""
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    with tl.backend_context("pytorch"):
        (core, (u_out, u_in)), _ = partial_tucker(weight.detach(), rank=list(ranks), modes=[0, 1],
                                                  n_iter_max=n_iter, init="svd")
    return core, u_out, u_in


def cp4(weight: torch.Tensor, rank: int, n_iter: int = 50, seed: int = 0) -> list[torch.Tensor]:
    """Rank-R CP of a 4-way kernel by ALS (tensorly.parafac, SVD init): factors [A (C_out x R), B (C_in x R),
    V (k_h x R), H (k_w x R)] with W[t,s,y,x] ≈ Σ_r A[t,r] B[s,r] V[y,r] H[x,r]; each term's weight λ_r is
    split as λ_r^¼ over its four factor columns."""
    import tensorly as tl
    from tensorly.decomposition import parafac

    with tl.backend_context("pytorch"), warnings.catch_warnings():
        # SVD init of a mode narrower than R fills the missing columns at random; tensorly warns each time.
        warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
        weights, factors = parafac(weight.detach(), rank, n_iter_max=n_iter, init="svd", tol=1e-10,
                                   random_state=seed, normalize_factors=True)
    scale = weights.abs() ** 0.25
    factors = [f * scale for f in factors]
    factors[0] = factors[0] * torch.sign(weights)
    return factors


# ----------------------------------------------------------------------------------------- layers from factors

def _conv(c_in: int, c_out: int, like: nn.modules.conv._ConvNd, kernel=None, stride=None, padding=None,
          dilation=None, groups: int = 1, bias: bool = False) -> nn.modules.conv._ConvNd:
    """A conv of the same class (Conv1d / Conv2d / Conv3d), device and dtype as `like`; kernel, stride,
    padding and dilation default to a pointwise conv (1, 1, 0, 1 on every axis)."""
    w, d = like.weight, len(like.kernel_size)
    kernel, stride = kernel or (1,) * d, stride or (1,) * d
    padding, dilation = (0,) * d if padding is None else padding, dilation or (1,) * d
    padding_mode = like.padding_mode if tuple(kernel) != (1,) * d else "zeros"
    return type(like)(c_in, c_out, kernel, stride, padding, dilation, groups, bias, padding_mode,
                      device=w.device, dtype=w.dtype)


def _set(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape))
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def svd_layers(layer: nn.Module, rank: int, whitening: torch.Tensor | None = None) -> nn.Sequential:
    """Truncated SVD of a Linear or Conv1d / Conv2d / Conv3d (weight as C_out x C_in·prod(kernel), e.g. C_out x
    C_in k for a Conv1d) at `rank`: `project` (C_in -> r, S½V_rᵀ; for a conv a conv of the same class with the
    original kernel / stride / padding / dilation / padding_mode) then `expand` (r -> C_out, U_r S½, bias; for a
    conv a pointwise conv of the same class). At full rank it reproduces the layer (up to rounding).

    With `whitening` L (lower triangular, L Lᵀ = A the input second moment, d x d): the SVD of W L = U S Vᵀ,
    `project` = S½V_rᵀ L⁻¹ (SVD-LLM's truncation-aware whitening: of all rank-r W', it minimises
    E‖(W − W') a‖² = ‖(W − W') L‖²_F = Σ_{i>r} s_i²)."""
    w = layer.weight.detach()
    m = w.reshape(w.shape[0], -1)
    if whitening is not None:
        m = m.double() @ whitening
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:rank].sqrt()
    first, second = root[:, None] * vh[:rank], u[:, :rank] * root
    if whitening is not None:  # S½V_rᵀ L⁻¹ by a triangular solve (X L = S½V_rᵀ)
        first = torch.linalg.solve_triangular(whitening, first, upper=False, left=False)
        first, second = first.to(w.dtype), second.to(w.dtype)
    bias = None if layer.bias is None else layer.bias.detach()
    if isinstance(layer, nn.Linear):
        project = nn.Linear(layer.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
        expand = nn.Linear(rank, layer.out_features, bias=bias is not None, device=w.device, dtype=w.dtype)
    else:
        project = _conv(layer.in_channels, rank, layer, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation)
        expand = _conv(rank, layer.out_channels, layer, bias=bias is not None)
    return nn.Sequential(OrderedDict(project=_set(project, first), expand=_set(expand, second, bias)))


def tucker2_layers(layer: nn.Conv2d, core: torch.Tensor, u_out: torch.Tensor, u_in: torch.Tensor) -> nn.Sequential:
    """The conv W = core ×₀ U_out ×₁ U_in as `reduce_in` (1x1, C_in -> r_in, U_inᵀ), `core` (r_in -> r_out, the
    original kernel / stride / padding / dilation) and `restore_out` (1x1, r_out -> C_out, U_out, original bias)."""
    r_out, r_in = core.shape[:2]
    bias = None if layer.bias is None else layer.bias.detach()
    return nn.Sequential(OrderedDict(
        reduce_in=_set(_conv(layer.in_channels, r_in, layer), u_in.T),
        core=_set(_conv(r_in, r_out, layer, layer.kernel_size, layer.stride, layer.padding, layer.dilation), core),
        restore_out=_set(_conv(r_out, layer.out_channels, layer, bias=bias is not None), u_out, bias)))


def cp_layers(layer: nn.Conv2d, factors: list[torch.Tensor]) -> nn.Sequential:
    """The conv with kernel Σ_r A[:,r] ∘ B[:,r] ∘ V[:,r] ∘ H[:,r] as `pointwise_in` (1x1, C_in -> R, Bᵀ),
    `depthwise_v` (k_h x 1, groups R, stride (s_h, 1), padding (p_h, 0), dilation (d_h, 1)), `depthwise_h`
    (1 x k_w, stride (1, s_w), padding (0, p_w), dilation (1, d_w)) and `pointwise_out` (1x1, R -> C_out, A, bias).
    A string padding ('same' / 'valid') is passed to both depthwise convs; it acts per axis."""
    a, b, v, h = factors
    rank = a.shape[1]
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    pad_v, pad_h = (layer.padding, layer.padding) if isinstance(layer.padding, str) else \
        ((layer.padding[0], 0), (0, layer.padding[1]))
    bias = None if layer.bias is None else layer.bias.detach()
    return nn.Sequential(OrderedDict(
        pointwise_in=_set(_conv(layer.in_channels, rank, layer), b.T),
        depthwise_v=_set(_conv(rank, rank, layer, (kh, 1), (sh, 1), pad_v, (dh, 1), groups=rank), v.T),
        depthwise_h=_set(_conv(rank, rank, layer, (1, kw), (1, sw), pad_h, (1, dw), groups=rank), h.T),
        pointwise_out=_set(_conv(rank, layer.out_channels, layer, bias=bias is not None), a, bias)))
