"""K-FAC factors of every Conv2d / Conv1d / Linear layer, their eigenbases, and the EKFAC eigenvalue correction.

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
softmax ("true" Fisher, `mc_samples` draws per input), summed over every class c weighted by its probability
p_c ("exact": E_{y~p}[∇ℓ ∇ℓᵀ] in closed form, one backward pass per class, no sampling noise; curvlinops'
"type-2"), or taken from the data ("empirical"). On a confident model the "true" estimate is dominated by the
few examples whose drawn label disagrees with the prediction, so one draw per example can swing it by decades:
use "exact" where the values themselves are compared (notebook 07), at C times the backward passes.
The model runs in eval mode (BatchNorm uses running statistics, examples stay independent).

A Linear layer on (N, *, D) inputs (tokens, channels-last pixels) shares its weight over the extra positions t,
like a conv over pixels. `approx` picks how (Eschenhagen et al., NeurIPS 2023, as curvlinops' kfac_approx):
"expand" (default) counts every position as a row, A = Σ_{n,t} a aᵀ / (N·T), G = Σ_{n,t} δ δᵀ / N, the
form a conv's pixels take here, so a channels-last Linear and the same 1x1 conv get the same factors (tested);
"reduce" first averages the inputs and sums the output gradients over the positions of each example,
A = Σ_n ā āᵀ / N, G = Σ_n δ̄ δ̄ᵀ / N: cheaper (N rows instead of N·T), and the natural one when the loss
sees the positions only through a pooled output (a ViT's class token or mean pooling).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..batches import first_batches
from ..checks import check_choice
from ..distributed import all_reduce_count, all_reduce_sum
from ..modes import eval_mode
from .damping import damp
from .fisher import KFAC_APPROXES, check_form_and_fisher, fisher_losses, quiet_backward

# compute_kfac's default largest factor side: 8192² in float64 is 512 MB, its eigh ~80 s on 2 CPU cores (4096: 9 s);
# it forms 512-channel 3x3 convs in im2col (4608) and VGG's Linear(4096, 4096), skips VGG's Linear(25088, 4096).
MAX_FACTOR = 8192


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
    {name: why}, whose factors would exceed compute_kfac's max_factor or whose forward never ran)."""

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


CONVS = (nn.Conv1d, nn.Conv2d)  # the convolutions K-FAC covers (groups = 1); a Conv1d as a Conv2d of height 1


def conv_geometry(conv: nn.Module) -> dict[str, tuple[int, int]]:
    """kernel_size, dilation, padding and stride of a Conv2d, or of a Conv1d read as a Conv2d of height 1 on
    (N, C, 1, L) inputs (`as_image`), as F.unfold takes them."""
    if isinstance(conv, nn.Conv1d):
        return dict(kernel_size=(1, conv.kernel_size[0]), dilation=(1, conv.dilation[0]), padding=(0, conv.padding[0]),
                    stride=(1, conv.stride[0]))
    return dict(kernel_size=conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)


def as_image(conv: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A conv's input or output as (N, C, H, W): a Conv1d's (N, C, L) as (N, C, 1, L)."""
    return t.unsqueeze(2) if isinstance(conv, nn.Conv1d) else t


def kernel_positions(conv: nn.Module) -> int:
    """k·k: the kernel positions of a Conv2d (k of a Conv1d)."""
    kh, kw = conv_geometry(conv)["kernel_size"]
    return kh * kw


def _pixel_counts(x_hw: tuple[int, int], conv: nn.Module, device: torch.device) -> torch.Tensor:
    """c_u: how many (output position, kernel position) pairs read input pixel u, as an (H, W) map.

    Unfolding a tensor of ones lists every pair; folding it back sums them per pixel."""
    ones = torch.ones(1, 1, *x_hw, device=device)
    kw = conv_geometry(conv)
    return F.fold(F.unfold(ones, **kw), x_hw, **kw)[0, 0]


def _conv_positions(x_hw: tuple[int, int], conv: nn.Module) -> int:
    """Number of output positions T of a convolution on an input of size x_hw."""
    g = conv_geometry(conv)
    out = [(x_hw[i] + 2 * g["padding"][i] - g["dilation"][i] * (g["kernel_size"][i] - 1) - 1) // g["stride"][i] + 1
           for i in range(2)]
    return out[0] * out[1]


def layer_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows a Linear / Conv1d / Conv2d layer multiplies by its weight matrix (C_out x d) on inputs `x`: a
    Linear's input vector at every position (tokens, pixels), a conv's im2col patch (C_in·k·k) at every output
    position; with a trailing 1 (the homogeneous coordinate) when the layer has a bias. Shape (rows, d [+ 1])."""
    if isinstance(module, nn.Linear):
        a = x.reshape(-1, x.shape[-1])
    else:
        a = F.unfold(as_image(module, x), **conv_geometry(module))  # (N, C·k·k, T)
        a = a.transpose(1, 2).reshape(-1, a.shape[1])
    if module.bias is not None:
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
    return a


def input_rows(module: nn.Module, x: torch.Tensor, form: str, approx: str = "expand") -> tuple[torch.Tensor, int]:
    """(Σ_rows a aᵀ, rows) of one batch of layer inputs `x` in the given form (homogeneous 1 if bias); a Linear
    layer's extra positions are rows ("expand", `layer_rows`) or averaged per example ("reduce")."""
    bias = module.bias is not None
    if isinstance(module, nn.Linear) and approx == "reduce":
        a = x.reshape(x.shape[0], -1, x.shape[-1]).mean(1)
        if bias:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
        return a.T @ a, a.shape[0]
    if isinstance(module, nn.Linear) or form == "im2col":
        a = layer_rows(module, x)
        return a.T @ a, a.shape[0]
    kk, x = kernel_positions(module), as_image(module, x)
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


def _output_gram(module: nn.Module, g: torch.Tensor, approx: str = "expand") -> torch.Tensor:
    """Σ_{n,t} δ δᵀ of per-example output gradients g: a conv's (N, C_out, H, W), or a Linear's (N, *, C_out),
    whose extra leading dimensions (tokens, channels-last positions) count as positions t like a conv's pixels
    ("expand"), or are summed per example first ("reduce": Σ_n δ̄ δ̄ᵀ, δ̄ = Σ_t δ_t)."""
    if isinstance(module, nn.Linear):
        gf = g.reshape(g.shape[0], -1, g.shape[-1]).sum(1) if approx == "reduce" else g.reshape(-1, g.shape[-1])
        return gf.T @ gf
    gf = g.flatten(2)
    return torch.bmm(gf, gf.transpose(1, 2)).sum(0)


def kfac_layers(model: nn.Module, layers: list[str] | None = None) -> tuple[dict[str, nn.Module], list[str]]:
    """Conv1d / Conv2d (groups=1) and Linear modules by name (all, or the named ones), and the names of the other
    modules with parameters of their own (skipped), grouped / depthwise convolutions included: their Fisher block is
    one Kronecker product per group, which this K-FAC does not form. Naming such a layer raises."""
    found, skipped = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, CONVS) and m.groups == 1):
            if layers is None or name in layers:
                found[name] = m
        elif any(True for _ in m.parameters(recurse=False)):
            skipped.append(name)
    if layers is not None:
        grouped = sorted(n for n in set(layers) - set(found) if isinstance(dict(model.named_modules()).get(n), CONVS))
        if grouped:
            raise ValueError(f"layers: {grouped} are grouped / depthwise convolutions (groups > 1); K-FAC here "
                             "covers Conv1d / Conv2d with groups=1 and Linear only")
        missing = sorted(set(layers) - set(found))
        if missing:
            raise ValueError(f"layers: {missing} are not Conv1d / Conv2d / Linear modules of the model")
    return found, skipped


def factor_sides(module: nn.Module, form: str) -> tuple[int, int]:
    """(A side, G side) of a layer's factors: C_in (·k_h·k_w in im2col; a Linear's in_features) + 1 if bias, C_out."""
    bias = int(module.bias is not None)
    if isinstance(module, nn.Linear):
        return module.in_features + bias, module.out_features
    kk = kernel_positions(module) if form == "im2col" else 1
    return module.in_channels * kk + bias, module.out_channels


def compute_kfac(model: nn.Module, loader: DataLoader, form: str = "channel_patch", fisher: str = "true",
                 num_batches: int = 4, mc_samples: int = 1, damping: float = 0.0,
                 layers: list[str] | None = None, max_factor: int | None = MAX_FACTOR,
                 approx: str = "expand") -> KFAC:
    """K-FAC factors (A, G) of every Conv2d / Linear layer, averaged over `num_batches` batches; `approx`:
    "expand" | "reduce" for Linear layers on (N, *, D) inputs (module docstring).

    One forward pass per batch records inputs (forward hooks) and the backward passes of `fisher_losses`
    (`mc_samples` for "true", one per class for "exact") record output gradients (gradient hooks on the layer
    outputs). `damping` γ adds √γ·I to both A and G (`damping.damp(·, γ, "absolute_sqrt")`). Factors live on
    the model's device. A layer whose `factor_sides` exceed `max_factor` (None: no limit) goes to skipped /
    too_large."""
    check_form_and_fisher(form, fisher)
    check_choice(approx, KFAC_APPROXES, "approx")
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
    scale = [1.0]

    def grad_hook(name):
        def hook(gout):
            gg = _output_gram(modules[name], gout.detach() * scale[0], approx)
            g_sum[name] = gg if g_sum[name] is None else g_sum[name] + gg
        return hook

    def fwd(name):
        def hook(mod, inp, out):
            s, r = input_rows(mod, inp[0].detach(), form, approx)
            a_sum[name] = s if a_sum[name] is None else a_sum[name] + s
            rows[name] += r
            # A gradient hook on the output tensor instead of register_full_backward_hook: the module
            # hook wraps inputs and outputs in extra autograd nodes (measured ~10% of a backward).
            out.register_hook(grad_hook(name))
        return hook

    handles = [m.register_forward_hook(fwd(n)) for n, m in modules.items()]
    batches = first_batches(loader, num_batches, device=device)
    with eval_mode(model):
        try:
            for x, y in batches:
                logits = model(x)
                # per-example output gradients = batch size x gradients of the mean loss
                scale[0] = x.shape[0]
                losses = list(fisher_losses(logits, y, fisher, mc_samples))
                for s, loss in enumerate(losses):
                    model.zero_grad(set_to_none=True)
                    quiet_backward(loss, retain_graph=s < len(losses) - 1)
        finally:
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
    # A module whose forward never ran (nn.MultiheadAttention's out_proj: its weight is read functionally) has
    # no factors: it is skipped, named.
    unused = {n: "never called as a module in the forward pass" for n in modules if rows[n] == 0}
    modules = {n: m for n, m in modules.items() if n not in unused}
    a_sum, g_sum = {n: a_sum[n] for n in modules}, {n: g_sum[n] for n in modules}
    skipped, too_large = skipped + list(unused), {**too_large, **unused}
    # Under torch.distributed the sums and counts of all ranks are added before dividing (N ranks, N x batches).
    all_reduce_sum(*a_sum.values(), *g_sum.values())
    rows = {n: all_reduce_count(r, device) for n, r in rows.items()}
    examples = batches.reduced_examples()
    out = {}
    for n, m in modules.items():
        A, G = a_sum[n] / rows[n], g_sum[n] / examples
        if damping > 0:
            A, G = damp(A, damping, "absolute_sqrt"), damp(G, damping, "absolute_sqrt")
        out[n] = LayerKFAC(n, m, A, G, form, m.bias is not None)
    return KFAC(out, skipped, form, too_large)
