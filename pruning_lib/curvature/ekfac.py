"""EKFAC (George et al., NeurIPS 2018): the second moments of per-example gradients in K-FAC's eigenbasis,
s[i, j, p] = E_n[(Q_Gᵀ ∇W_n[:, :, p] Q_A)_ij²], which replace K-FAC's eigenvalue products λ_G[i]·λ_A[j]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..batches import first_batches
from ..distributed import all_reduce_sum
from ..modes import eval_mode
from .fisher import check_form_and_fisher, fisher_losses, quiet_backward
from .kfac import CONVS, KFAC, as_image, conv_geometry, kernel_positions


def per_example_weight_grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-example gradients ∇W_n = Σ_t δ_{n,t} a_{n,t}ᵀ as (N, C_out, C_in(+1 bias), k·k) from layer inputs
    x and per-example output gradients g."""
    bias = module.bias is not None
    if isinstance(module, nn.Linear):  # (N, *, D): the extra leading dimensions are positions t
        x, g = x.reshape(x.shape[0], -1, x.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])
        a = torch.cat([x, x.new_ones(*x.shape[:2], 1)], 2) if bias else x
        return torch.einsum("nto,nti->noi", g, a).unsqueeze(-1)
    kk = kernel_positions(module)
    a = F.unfold(as_image(module, x), **conv_geometry(module))  # (N, C·kk, T)
    grad = torch.einsum("not,nkt->nok", g.flatten(2), a).reshape(x.shape[0], g.shape[1], -1, kk)
    if bias:
        b = torch.zeros_like(grad[:, :, :1, :])
        b[:, :, 0, 0] = g.flatten(2).sum(-1)  # the bias sits at kernel position 0 of the extra input row
        grad = torch.cat([grad, b], 2)
    return grad


def rotated_square_sum(grad: torch.Tensor, Q_A: torch.Tensor, Q_G: torch.Tensor) -> torch.Tensor:
    """Σ_n (Q_Gᵀ ∇W_n[:, :, p] Q_A)²_ij of per-example gradients `grad` (N, C_out, d_A, k·k): the sum behind EKFAC's
    second moments, shape (columns of Q_G, columns of Q_A, k·k)."""
    return torch.einsum("oi,noap,ab->nibp", Q_G, grad, Q_A).pow(2).sum(0)


def ekfac_correction(model: nn.Module, kfac: KFAC, loader: DataLoader, num_examples: int = 256,
                     fisher: str = "true", weight_only: bool = False) -> dict[str, torch.Tensor]:
    """EKFAC eigenvalues (George et al. 2018) per layer: s[i, j, p] = E_n[(Q_Gᵀ ∇W_n[:, :, p] Q_A)_ij²]
    from per-example gradients of `num_examples` examples, shape (C_out, d_A, k·k) for channel_patch
    factors ((C_out, d_A, 1) for im2col and Linear). Replaces λ_G[i]·λ_A[j] of K-FAC. With `weight_only`
    the bias is left out: Q_A is the basis of the weight block (`LayerKFAC.weight_eig`, what EigenDamage
    rotates) and d_A = C_in (C_in·k·k for im2col)."""
    check_form_and_fisher(kfac.form, fisher)
    device = next(model.parameters()).device
    inputs, outgrads = {}, {}
    mods = {n: lf.module for n, lf in kfac.items()}

    def record(name):
        def hook(mod, inp, out):
            inputs[name] = inp[0].detach()
            # a gradient hook on the output tensor, as in compute_kfac: a full module backward hook fails when
            # an in-place activation (nn.ReLU(inplace=True), torchvision's ResNet / MobileNet) follows the layer
            out.register_hook(lambda g: outgrads.__setitem__(name, g.detach()))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in mods.items()]
    sums = {n: None for n in mods}
    batches = first_batches(loader, num_examples=num_examples, device=device)
    with eval_mode(model):
        try:
            for x, y in batches:
                logits = model(x)
                losses = list(fisher_losses(logits, y, fisher))
                for k, loss in enumerate(losses):
                    model.zero_grad(set_to_none=True)
                    quiet_backward(loss, retain_graph=k < len(losses) - 1)
                    for n, lf in kfac.items():
                        _, qa, _, qg = lf.weight_eig() if weight_only else lf.eig()
                        grad = per_example_weight_grads(lf.module, inputs[n], outgrads[n] * x.shape[0])
                        if kfac.form == "im2col" and isinstance(lf.module, CONVS):
                            grad = _as_im2col(grad, lf.has_bias)
                            grad = grad[:, :, :-1] if weight_only and lf.has_bias else grad
                        elif weight_only and lf.has_bias:
                            grad = grad[:, :, :-1]
                        sq = rotated_square_sum(grad, qa, qg)
                        sums[n] = sq if sums[n] is None else sums[n] + sq
        finally:
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
    all_reduce_sum(*sums.values())
    seen = batches.reduced_examples()
    return {n: s / seen for n, s in sums.items()}


def _as_im2col(grad: torch.Tensor, bias: bool) -> torch.Tensor:
    """(N, C_out, C_in(+1), kk) -> (N, C_out, C_in·kk (+1), 1) in unfold's order (channel-major), the bias
    (stored at [.., C_in, 0]) last."""
    n, o, _, kk = grad.shape
    w = (grad[:, :, :-1, :] if bias else grad).reshape(n, o, -1)
    if bias:
        w = torch.cat([w, grad[:, :, -1, :1]], 2)
    return w.unsqueeze(-1)
