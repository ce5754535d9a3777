"""Dense curvature matrices of small models, in the order of model.parameters() (for teaching and as test
oracles; memory grows as the square of the parameter count, so keep models to a few thousand parameters)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev, vmap

from .kfac import KFAC


def _flat_call(model: nn.Module):
    """(f(flat_params, x) -> logits, flat_params) with the model's parameters flattened in order."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    buffers = dict(model.named_buffers())
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat, x):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            ps[n] = flat[i:i + s.numel()].view(s)
            i += s.numel()
        return functional_call(model, (ps, buffers), (x,))

    return f, flat0


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇²_θ of the mean cross-entropy on (x, y), eval mode, P x P."""
    model.eval()
    f, flat0 = _flat_call(model)
    with warnings.catch_warnings():  # torch.func's forward-mode step imports a module that calls torch.jit.script
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        return hessian(lambda p: F.cross_entropy(f(p, x), y))(flat0)


def dense_fisher(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The true Fisher = Gauss-Newton matrix for softmax cross-entropy: (1/N) Σ_n J_nᵀ (diag(p_n) − p_n p_nᵀ) J_n,
    with J_n the Jacobian of example n's logits w.r.t. the parameters (exact, no sampling). P x P."""
    model.eval()
    f, flat0 = _flat_call(model)
    J = vmap(jacrev(lambda p, xi: f(p, xi.unsqueeze(0))[0]), in_dims=(None, 0))(flat0, x)  # (N, C, P)
    with torch.no_grad():
        p = F.softmax(f(flat0, x), 1)
    H_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncp,ncd,ndq->pq", J, H_out, J) / x.shape[0]


def kfac_dense(model: nn.Module, kfac: KFAC) -> torch.Tensor:
    """The block-diagonal K-FAC matrix (G ⊗ A per layer; G ⊗ A ⊗ I_{k·k} for channel_patch convs, whose bias
    keeps only its diagonal coordinate) in the order of model.parameters(); parameters outside K-FAC's
    layers get zero rows / columns."""
    offsets, i = {}, 0
    for p in model.parameters():
        offsets[id(p)] = i
        i += p.numel()
    out = torch.zeros(i, i, dtype=next(model.parameters()).dtype)
    for lf in kfac.values():
        m = lf.module
        c_out = m.weight.shape[0]
        d_w = m.weight[0].numel()
        kk = d_w // m.weight.shape[1]
        if lf.form == "channel_patch" and kk > 1:
            a_w = torch.kron(lf.A[: m.weight.shape[1], : m.weight.shape[1]], torch.eye(kk, dtype=lf.A.dtype))
            A = a_w if not lf.has_bias else torch.block_diag(a_w, lf.A[-1:, -1:])
        else:
            A = lf.A
        block = torch.kron(lf.G, A)  # row-major over (output o, input coordinate j): [W[o, :], b[o]]
        idx = []
        for o in range(c_out):
            idx += [offsets[id(m.weight)] + o * d_w + j for j in range(d_w)]
            if lf.has_bias:
                idx.append(offsets[id(m.bias)] + o)
        idx = torch.tensor(idx)
        out[idx[:, None], idx[None, :]] = block.to(out.dtype)
    return out
