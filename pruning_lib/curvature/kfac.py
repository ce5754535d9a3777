"""K-FAC factors of every Conv2d / Linear layer, their eigenbases, and the EKFAC eigenvalue correction.

For a layer with weight W (C_out x C_in [x k x k]) and per-example gradient ∇W_n = Σ_t δ_{n,t} a_{n,t}ᵀ
(t: output positions, δ: output gradient of example n's loss, a: input patch), the Fisher block of
vec(W) (row-major) is approximated by G ⊗ A with

    G = (1/N) Σ_{n,t} δ_{n,t} δ_{n,t}ᵀ                      (C_out x C_out)
    A = (1/rows) Σ_rows a aᵀ                                 (d x d)

Two forms of A: "im2col" (a = the full patch, d = C_in·k·k; Grosse & Martens 2016) and "channel_patch"
(a = one input pixel's channel vector, d = C_in, rows = every (example, output position, kernel position)
pair; the form EigenDamage uses: Fisher ≈ G ⊗ A ⊗ I_{k·k}). A bias is a homogeneous coordinate: a 1
appended to every row, so A gains a last row / column. The loss of a batch is its mean, so the output
gradients are multiplied by the batch size to get per-example ones. Labels are sampled from the model's
softmax ("true" Fisher, `mc_samples` draws per input) or taken from the data ("empirical").
The model runs in eval mode (BatchNorm uses running statistics, examples stay independent).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..checks import check_choice
from ..distributed import all_reduce_count, all_reduce_sum
from ..modes import eval_mode

FORMS = ("channel_patch", "im2col")
FISHERS = ("true", "empirical")
# compute_kfac's default largest factor side: 8192² in float64 is 512 MB, its eigh ~80 s on 2 CPU cores (4096: 9 s);
# it forms 512-channel 3x3 convs in im2col (4608) and VGG's Linear(4096, 4096), skips VGG's Linear(25088, 4096).
MAX_FACTOR = 8192
PER_EXAMPLE_BUDGET = 2 ** 28  # diagonal_fisher: at most this many per-example gradient entries at once (1 GiB)


def _check(form: str, fisher: str) -> None:
    check_choice(form, FORMS, "form")
    check_choice(fisher, FISHERS, "fisher")


@dataclass
class LayerKFAC:
    """K-FAC factors of one layer: Fisher block of vec(W) (row-major) ≈ G ⊗ A (⊗ I_{k·k} for channel_patch)."""

    name: str
    module: nn.Module
    A: torch.Tensor
    G: torch.Tensor
    form: str
    has_bias: bool
    _eig: tuple | None = field(default=None, repr=False)
    _weight_eig: tuple | None = field(default=None, repr=False)

    def eig(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(eig_A, Q_A, eig_G, Q_G): A = Q_A diag(eig_A) Q_Aᵀ, likewise G; eigenvalues clamped at 0.
        torch.linalg.eigh in float64 for accuracy, computed once and cached."""
        if self._eig is None:
            self._eig = (*_eigh(self.A), *_eigh(self.G))
        return self._eig

    def weight_eig(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The eigenbasis of the weight block only (what EigenDamage rotates): `eig()` when the layer has no
        bias; with a bias, A's trailing homogeneous coordinate is dropped and A[:-1, :-1] decomposed (float64,
        once, cached; G's basis is shared with `eig()`)."""
        if not self.has_bias:
            return self.eig()
        if self._weight_eig is None:
            self._weight_eig = (*_eigh(self.A[:-1, :-1]), *self.eig()[2:])
        return self._weight_eig


def _eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues clamped at 0, eigenvectors) of a symmetric factor, by torch.linalg.eigh in float64, returned
    in the factor's dtype."""
    values, vectors = torch.linalg.eigh(m.double())
    return values.clamp_min(0).to(m.dtype), vectors.to(m.dtype)


class KFAC(Mapping):
    """The K-FAC factors of a model's layers, by module name; `skipped` lists modules with parameters
    that K-FAC does not cover (BatchNorm and other non Conv2d / Linear layers, and the layers in `too_large`:
    {name: why}, whose factors would exceed compute_kfac's max_factor)."""

    def __init__(self, layers: dict[str, LayerKFAC], skipped: list[str], form: str, too_large: dict | None = None):
        self.layers, self.skipped, self.form = layers, skipped, form
        self.too_large = too_large or {}

    def __getitem__(self, name: str) -> LayerKFAC:
        return self.layers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def eigendecompose(self) -> "KFAC":
        """Eigendecompose every layer's factors (cached on each LayerKFAC)."""
        for lf in self.layers.values():
            lf.eig()
        return self


def _pixel_counts(x_hw: tuple[int, int], conv: nn.Conv2d, device: torch.device) -> torch.Tensor:
    """c_u: how many (output position, kernel position) pairs read input pixel u, as an (H, W) map.

    Unfolding a tensor of ones lists every pair; folding it back sums them per pixel."""
    ones = torch.ones(1, 1, *x_hw, device=device)
    kw = dict(kernel_size=conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    return F.fold(F.unfold(ones, **kw), x_hw, **kw)[0, 0]


def _conv_positions(x_hw: tuple[int, int], conv: nn.Conv2d) -> int:
    """Number of output positions T of a convolution on an input of size x_hw."""
    out = [(x_hw[i] + 2 * conv.padding[i] - conv.dilation[i] * (conv.kernel_size[i] - 1) - 1) // conv.stride[i] + 1
           for i in range(2)]
    return out[0] * out[1]


def input_rows(module: nn.Module, x: torch.Tensor, form: str) -> tuple[torch.Tensor, int]:
    """(Σ_rows a aᵀ, rows) of one batch of layer inputs `x` in the given form (homogeneous 1 if bias)."""
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        a = x.reshape(-1, x.shape[-1])
        if bias:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
        return a.T @ a, a.shape[0]
    kk = module.kernel_size[0] * module.kernel_size[1]
    if form == "im2col":
        a = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (N, C·k·k, T)
        a = a.transpose(1, 2).reshape(-1, a.shape[1])
        if bias:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
        return a.T @ a, a.shape[0]
    # channel_patch: A = Σ_u c_u x_u x_uᵀ / rows, one weighted channel covariance (exact for any geometry;
    # padding rows are zero vectors and count in `rows`), instead of unfolding the input k·k times.
    counts = _pixel_counts(x.shape[-2:], module, x.device)
    rows = x.shape[0] * _conv_positions(x.shape[-2:], module) * kk
    xf = x.flatten(2)  # (N, C, H·W): batched products avoid a transposed copy of the activations
    xw = xf * counts.flatten()
    s = torch.bmm(xw, xf.transpose(1, 2)).sum(0)
    if bias:
        m = xw.sum((0, 2)).unsqueeze(1)
        s = torch.cat([torch.cat([s, m], 1), torch.cat([m.T, m.new_full((1, 1), float(rows))], 1)], 0)
    return s, rows


def _output_gram(g: torch.Tensor) -> torch.Tensor:
    """Σ_{n,t} δ δᵀ of per-example output gradients g: (N, C_out) or (N, C_out, H, W)."""
    if g.dim() == 4:
        gf = g.flatten(2)
        return torch.bmm(gf, gf.transpose(1, 2)).sum(0)
    return g.T @ g


def _backward(loss: torch.Tensor, retain_graph: bool = False) -> None:
    """loss.backward(), silencing the warning that the first layer's full backward hook fires although its
    input needs no gradient (the output gradient is all the hook needs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward(retain_graph=retain_graph)


def sample_labels(logits: torch.Tensor, y: torch.Tensor, fisher: str) -> torch.Tensor:
    """Labels for the Fisher: drawn from softmax(logits) ("true") or the data's own ("empirical")."""
    if fisher == "empirical":
        return y
    return torch.multinomial(F.softmax(logits.detach().float(), 1), 1).squeeze(1)


def kfac_layers(model: nn.Module, layers: list[str] | None = None) -> tuple[dict[str, nn.Module], list[str]]:
    """Conv2d (groups=1) / Linear modules by name (all, or the named ones), and the names of the other modules
    with parameters of their own (skipped), grouped / depthwise convolutions included: their Fisher block is
    one Kronecker product per group, which this K-FAC does not form. Naming such a layer raises."""
    found, skipped = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            if layers is None or name in layers:
                found[name] = m
        elif any(True for _ in m.parameters(recurse=False)):
            skipped.append(name)
    if layers is not None:
        grouped = sorted(n for n in set(layers) - set(found) if isinstance(dict(model.named_modules()).get(n), nn.Conv2d))
        if grouped:
            raise ValueError(f"layers: {grouped} are grouped / depthwise convolutions (groups > 1); K-FAC here "
                             "covers Conv2d with groups=1 and Linear only")
        missing = sorted(set(layers) - set(found))
        if missing:
            raise ValueError(f"layers: {missing} are not Conv2d / Linear modules of the model")
    return found, skipped


def factor_sides(module: nn.Module, form: str) -> tuple[int, int]:
    """(A side, G side) of a layer's factors: C_in (·k_h·k_w in im2col; a Linear's in_features) + 1 if bias, C_out."""
    bias = int(module.bias is not None)
    if isinstance(module, nn.Linear):
        return module.in_features + bias, module.out_features
    kk = module.kernel_size[0] * module.kernel_size[1] if form == "im2col" else 1
    return module.in_channels * kk + bias, module.out_channels


def compute_kfac(model: nn.Module, loader: DataLoader, form: str = "channel_patch", fisher: str = "true",
                 num_batches: int = 4, mc_samples: int = 1, damping: float = 0.0,
                 layers: list[str] | None = None, max_factor: int | None = MAX_FACTOR) -> KFAC:
    """K-FAC factors (A, G) of every Conv2d / Linear layer, averaged over `num_batches` batches.

    One forward pass per batch records inputs (forward hooks) and `mc_samples` backward passes record
    output gradients (gradient hooks on the layer outputs). `damping` γ adds √γ·I to both A and G. Factors live on the
    model's device. A layer whose `factor_sides` exceed `max_factor` (None: no limit) goes to skipped / too_large."""
    _check(form, fisher)
    if num_batches < 1 or mc_samples < 1:
        raise ValueError(f"num_batches, mc_samples: must be >= 1 (got {num_batches}, {mc_samples})")
    modules, skipped = kfac_layers(model, layers)
    sides = {n: factor_sides(m, form) for n, m in modules.items() if max_factor is not None}
    too_large = {n: f"K-FAC factors A {a}x{a}, G {g}x{g} ({form}) exceed max_factor={max_factor}"
                 for n, (a, g) in sides.items() if max(a, g) > max_factor}
    modules = {n: m for n, m in modules.items() if n not in too_large}
    skipped = skipped + list(too_large)
    device = next(model.parameters()).device
    a_sum = {n: None for n in modules}
    g_sum = {n: None for n in modules}
    rows = dict.fromkeys(modules, 0)
    examples, scale = 0, [1.0]

    def grad_hook(name):
        def hook(gout):
            gg = _output_gram(gout.detach() * scale[0])
            g_sum[name] = gg if g_sum[name] is None else g_sum[name] + gg
        return hook

    def fwd(name):
        def hook(mod, inp, out):
            s, r = input_rows(mod, inp[0].detach(), form)
            a_sum[name] = s if a_sum[name] is None else a_sum[name] + s
            rows[name] += r
            # A gradient hook on the output tensor instead of register_full_backward_hook: the module
            # hook wraps inputs and outputs in extra autograd nodes (measured ~10% of a backward).
            out.register_hook(grad_hook(name))
        return hook

    handles = [m.register_forward_hook(fwd(n)) for n, m in modules.items()]
    with eval_mode(model):
        try:
            for b, (x, y) in enumerate(loader):
                if b >= num_batches:
                    break
                x, y = x.to(device), y.to(device)
                logits = model(x)
                # per-example output gradients = batch size x gradients of the mean loss; each MC draw
                # counts 1 / mc_samples.
                scale[0] = x.shape[0] / mc_samples ** 0.5
                for s in range(mc_samples):
                    loss = F.cross_entropy(logits, sample_labels(logits, y, fisher))
                    model.zero_grad(set_to_none=True)
                    _backward(loss, retain_graph=s < mc_samples - 1)
                examples += x.shape[0]
        finally:
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
    # Under torch.distributed the sums and counts of all ranks are added before dividing (N ranks, N x batches).
    all_reduce_sum(*a_sum.values(), *g_sum.values())
    rows = {n: all_reduce_count(r, device) for n, r in rows.items()}
    examples = all_reduce_count(examples, device)
    out = {}
    for n, m in modules.items():
        A, G = a_sum[n] / rows[n], g_sum[n] / examples
        if damping > 0:
            A = A + damping ** 0.5 * torch.eye(A.shape[0], device=device)
            G = G + damping ** 0.5 * torch.eye(G.shape[0], device=device)
        out[n] = LayerKFAC(n, m, A, G, form, m.bias is not None)
    return KFAC(out, skipped, form, too_large)


def per_example_weight_grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-example gradients ∇W_n = Σ_t δ_{n,t} a_{n,t}ᵀ as (N, C_out, C_in(+1 bias), k·k) from layer inputs
    x and per-example output gradients g."""
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        a = torch.cat([x, x.new_ones(x.shape[0], 1)], 1) if bias else x
        return torch.einsum("no,ni->noi", g, a).unsqueeze(-1)
    kk = module.kernel_size[0] * module.kernel_size[1]
    a = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (N, C·kk, T)
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
    _check(kfac.form, fisher)
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
    seen = 0
    with eval_mode(model):
        try:
            for x, y in loader:
                if seen >= num_examples:
                    break
                x, y = x[: num_examples - seen].to(device), y[: num_examples - seen].to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, sample_labels(logits, y, fisher))
                model.zero_grad(set_to_none=True)
                _backward(loss)
                for n, lf in kfac.items():
                    _, qa, _, qg = lf.weight_eig() if weight_only else lf.eig()
                    grad = per_example_weight_grads(lf.module, inputs[n], outgrads[n] * x.shape[0])
                    if kfac.form == "im2col" and isinstance(lf.module, nn.Conv2d):
                        grad = _as_im2col(grad, lf.has_bias)
                        grad = grad[:, :, :-1] if weight_only and lf.has_bias else grad
                    elif weight_only and lf.has_bias:
                        grad = grad[:, :, :-1]
                    sq = rotated_square_sum(grad, qa, qg)
                    sums[n] = sq if sums[n] is None else sums[n] + sq
                seen += x.shape[0]
        finally:
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
    all_reduce_sum(*sums.values())
    seen = all_reduce_count(seen, device)
    return {n: s / seen for n, s in sums.items()}


def _as_im2col(grad: torch.Tensor, bias: bool) -> torch.Tensor:
    """(N, C_out, C_in(+1), kk) -> (N, C_out, C_in·kk (+1), 1) in unfold's order (channel-major), the bias
    (stored at [.., C_in, 0]) last."""
    n, o, _, kk = grad.shape
    w = (grad[:, :, :-1, :] if bias else grad).reshape(n, o, -1)
    if bias:
        w = torch.cat([w, grad[:, :, -1, :1]], 2)
    return w.unsqueeze(-1)


def diagonal_fisher(model: nn.Module, loader: DataLoader, num_examples: int = 256, fisher: str = "true",
                    chunk: int = 64) -> dict[str, torch.Tensor]:
    """Diagonal of the Fisher, F_ii = E_n[(∂ℓ_n/∂θ_i)²], from exact per-example gradients
    (torch.func.vmap of torch.func.grad), by parameter name, each shaped like its parameter. `chunk` examples
    at a time, fewer when chunk x parameters would exceed PER_EXAMPLE_BUDGET (VGG-11's 129 M: one at a time)."""
    from torch.func import functional_call, grad, vmap

    _check("channel_patch", fisher)
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    chunk = max(1, min(chunk, PER_EXAMPLE_BUDGET // max(1, sum(v.numel() for v in params.values()))))
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    seen = 0
    with eval_mode(model):
        for x, y in loader:
            if seen >= num_examples:
                break
            x, y = x[: num_examples - seen].to(device), y[: num_examples - seen].to(device)
            with torch.no_grad():
                y = sample_labels(model(x), y, fisher)
            for i in range(0, x.shape[0], chunk):
                grads = per_example(params, x[i:i + chunk], y[i:i + chunk])
                for k, g in grads.items():
                    sums[k] += (g ** 2).sum(0)
            seen += x.shape[0]
    all_reduce_sum(*sums.values())
    seen = all_reduce_count(seen, device)
    return {k: s / seen for k, s in sums.items()}
