"""Activation-whitened SVD: the truncation-aware whitening of SVD-LLM (Wang et al., ICLR 2025), the one-sided
counterpart of Improved EigenDamage's whitened subspace (the SVD of G^½ W A^½, both sides).

Every factorisable layer's W is truncated in the metric of its inputs instead of the Frobenius norm: with
A = E[a aᵀ] over calibration batches (curvature.activations; im2col patches for a conv) and L its Cholesky
factor (A damped relatively, A + δ·mean(diag A)·I, so that L exists for any input), the SVD W L = U S Vᵀ keeps
the r directions of largest s_i, and among all rank-r W' it minimises E‖(W − W') a‖² = Σ_{i>r} s_i². The spectra
s² of W L feed lowrank's rank rules (budget | energy | vbmf) and the factorised form is svd's (a conv C_in -> r
with the original kernel, then a 1x1 conv r -> C_out; a Linear as two). Layers K-FAC does not cover (Conv3d) or
whose A side exceeds `max_factor` keep the plain SVD and are listed in info["unwhitened"].
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import nn

from ..checks import checked
from ..curvature.activations import input_covariances
from ..curvature.damping import damp
from ..curvature.kfac import CONVS, MAX_FACTOR
from ..pruner import PruneContext, PruneResult, finish
from .lowrank import RULES, LayerInfo, analyse, fit_and_factorise
from .vbmf import evbmf_rank


def whitened_info(info: LayerInfo, whitening: torch.Tensor) -> LayerInfo:
    """`info` with the spectrum of W L (squared singular values, descending, float64 on CPU) and its EVBMF rank."""
    w = info.module.weight.detach()
    m = w.reshape(w.shape[0], -1).double() @ whitening
    s = torch.linalg.svdvals(m).cpu()
    return replace(info, spectra=[s ** 2], vbmf=[max(1, evbmf_rank(s, tuple(m.shape))[0])])


def cholesky(name: str, a: torch.Tensor) -> torch.Tensor:
    """The lower Cholesky factor L of a layer's damped input second moment (ValueError naming the layer when A is
    not positive definite: damping 0 on inputs that span fewer directions than the layer reads)."""
    factor, failed = torch.linalg.cholesky_ex(a)
    if failed:
        raise ValueError(f"layer '{name}': its input second moment is singular (rank < {a.shape[0]}); raise damping")
    return factor


@checked(rank_rule=RULES)
def prune_whitened_svd(model: nn.Module, ctx: PruneContext, target: float, rank_rule: str = "budget",
                       include_classifier: bool = False, round_to: int = 1, num_batches: int = 4,
                       damping: float = 1e-3, max_factor: int = MAX_FACTOR) -> PruneResult:
    """Registry entry: SVD of every conv / linear layer's W A^½ (input second moments over `num_batches`
    training batches, relative `damping`), ranks by `rank_rule` fitted to the target, multiples of round_to."""
    t0 = time.perf_counter()
    infos = analyse(model, ctx.input_shape, "svd", include_classifier)
    covered = [i.name for i in infos
               if isinstance(i.module, (nn.Linear, *CONVS)) and i.module.weight[0].numel() <= max_factor]
    covariances = input_covariances(model, ctx.loader, covered, num_batches)
    whitening = {n: cholesky(n, damp(a, damping, "relative")) for n, a in covariances.items()}
    infos = [whitened_info(i, whitening[i.name]) if i.name in whitening else i for i in infos]
    details = fit_and_factorise(model, ctx, target, infos, "svd", rank_rule, round_to, t0, whitening=whitening,
                                label="whitened_svd")
    details["unwhitened"] = [i.name for i in infos if i.name not in whitening]
    details["seconds_whitening"] = round(time.perf_counter() - t0, 3)
    return finish(model, ctx, details)
