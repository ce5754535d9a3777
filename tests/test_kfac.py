"""K-FAC, EKFAC and diagonal Fisher against independent oracles (per-example loops, dense Fisher, closed forms)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.curvature import compute_kfac, diagonal_fisher, ekfac_correction
from pruning_lib.curvature.dense import dense_fisher
from pruning_lib.curvature.kfac import input_rows

from helpers import random_loader, rel


def tiny_net(bias=False):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Conv2d(3, 4, 3, stride=2, bias=bias), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5)).eval()


def loader(n=8, shape=(2, 6, 6), classes=5, batch=None):
    """This file's data: `random_loader` drawn from seed 1, by default one batch of 8 inputs for `tiny_net`."""
    return random_loader(n, shape, classes, batch, seed=1)


def per_example_grads(model, x, y):
    """List over examples of {param name: gradient} by a plain loop (batch of one, eval mode)."""
    out = []
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        out.append({k: p.grad.clone() for k, p in model.named_parameters()})
    model.zero_grad()
    return out


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("bias", [False, True])
def test_channel_patch_matches_the_unfold_form(k, stride, padding, bias):
    conv = nn.Conv2d(3, 4, k, stride=stride, padding=padding, bias=bias)
    x = torch.randn(5, 3, 7, 6)
    a = F.unfold(x, k, padding=padding, stride=stride)  # (N, C·k·k, T)
    rows = a.reshape(5, 3, k * k, -1).permute(0, 2, 3, 1).reshape(-1, 3)  # one row per (n, p, t)
    if bias:
        rows = torch.cat([rows, torch.ones(rows.shape[0], 1)], 1)
    ref = rows.T @ rows
    fast, n = input_rows(conv, x, "channel_patch")
    assert n == rows.shape[0]
    assert rel(fast, ref) < 1e-5


def test_linear_one_example_fisher_block_is_exactly_g_kron_a():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    dl = loader(1, (4,), 3)
    kf = compute_kfac(model, dl, form="im2col", fisher="empirical", num_batches=1)["0"]
    x, y = next(iter(dl))
    g = per_example_grads(model, x, y)[0]
    vec = torch.cat([g["0.weight"], g["0.bias"][:, None]], 1).flatten()  # row-major, bias = homogeneous coord
    assert torch.allclose(torch.kron(kf.G, kf.A), torch.outer(vec, vec), atol=1e-6)


def test_conv_with_one_output_position_is_exact_in_im2col_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Flatten(), nn.Linear(3, 4)).eval()
    dl = loader(1, (2, 3, 3), 4)
    kf = compute_kfac(model, dl, form="im2col", fisher="empirical", num_batches=1)["0"]
    x, y = next(iter(dl))
    vec = per_example_grads(model, x, y)[0]["0.weight"].flatten()
    assert torch.allclose(torch.kron(kf.G, kf.A), torch.outer(vec, vec), atol=1e-6)


@pytest.mark.parametrize("form", ["channel_patch", "im2col"])
def test_factors_match_their_definition_over_a_batch(form):
    """A = mean over rows of a aᵀ and G = (1/N) Σ_{n,t} δδᵀ, with δ from one-example backward passes."""
    model = tiny_net()
    dl = loader(8, batch=4)
    kfac = compute_kfac(model, dl, form=form, fisher="empirical", num_batches=2)
    assert kfac.skipped == ["1"]  # BatchNorm
    x, y = next(iter(DataLoader(dl.dataset, batch_size=8)))
    conv = model[3]
    acts, outs = [], []
    def record(_m, inp, out):
        acts.append(inp[0].detach())
        outs.append(out)

    h1 = conv.register_forward_hook(record)
    G_ref = torch.zeros(4, 4)
    for i in range(8):
        logits = model(x[i:i + 1])
        delta = torch.autograd.grad(F.cross_entropy(logits, y[i:i + 1]), outs[-1])[0][0]  # (C_out, H, W)
        d = delta.flatten(1).T
        G_ref += d.T @ d / 8
    h1.remove()
    xin = torch.cat(acts)
    a = F.unfold(xin, 3, stride=2)  # (N, C·9, T)
    if form == "im2col":
        rows = a.transpose(1, 2).reshape(-1, 27)
    else:
        rows = a.reshape(8, 3, 9, -1).permute(0, 2, 3, 1).reshape(-1, 3)
    A_ref = rows.T @ rows / rows.shape[0]
    assert rel(kfac["3"].A, A_ref) < 1e-5 and rel(kfac["3"].G, G_ref) < 1e-5


def test_true_fisher_g_of_the_classifier_matches_the_closed_form():
    """For logits z = W a + b, δ = p - e_y; E_{y~p}[δδᵀ] = diag(p) - ppᵀ, averaged over inputs."""
    model = tiny_net()
    dl = loader(4)
    torch.manual_seed(0)
    G = compute_kfac(model, dl, fisher="true", num_batches=1, mc_samples=3000, layers=["6"])["6"].G
    x, _ = next(iter(dl))
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    G_ref = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
    assert rel(G, G_ref) < 0.06


def test_eigendecomposition_reconstructs_the_factors():
    lf = compute_kfac(tiny_net(), loader(), num_batches=1)["3"]
    ea, qa, eg, qg = lf.eig()
    assert (ea >= 0).all() and (eg >= 0).all()
    assert torch.allclose(qa @ torch.diag(ea) @ qa.T, lf.A, atol=1e-5)
    assert torch.allclose(qg @ torch.diag(eg) @ qg.T, lf.G, atol=1e-5)
    assert lf.eig() is lf.eig()  # cached


def test_damping_adds_sqrt_gamma_identity():
    a = compute_kfac(tiny_net(), loader(), fisher="empirical", num_batches=1)["3"]
    b = compute_kfac(tiny_net(), loader(), fisher="empirical", num_batches=1, damping=0.04)["3"]
    assert torch.allclose(b.A - a.A, 0.2 * torch.eye(3), atol=1e-6)
    assert torch.allclose(b.G - a.G, 0.2 * torch.eye(4), atol=1e-6)


@pytest.mark.parametrize("form", ["channel_patch", "im2col"])
def test_ekfac_matches_a_brute_force_loop(form):
    model = tiny_net(bias=True)
    dl = loader(6, batch=4)
    kfac = compute_kfac(model, dl, form=form, fisher="empirical", num_batches=2)
    s = ekfac_correction(model, kfac, dl, num_examples=6, fisher="empirical")
    x, y = next(iter(DataLoader(dl.dataset, batch_size=6)))
    grads = per_example_grads(model, x, y)
    for name in ("0", "3", "6"):
        _, qa, _, qg = kfac[name].eig()
        ref = 0
        for g in grads:
            w, b = g[f"{name}.weight"], g[f"{name}.bias"]
            if w.dim() == 2:
                mats = [torch.cat([w, b[:, None]], 1)]
            elif form == "im2col":
                mats = [torch.cat([w.flatten(1), b[:, None]], 1)]
            else:  # channel_patch: one matrix per kernel position, the bias at position 0
                wk = w.flatten(2)
                mats = [torch.cat([wk[:, :, p], (b if p == 0 else torch.zeros_like(b))[:, None]], 1)
                        for p in range(wk.shape[2])]
            ref = ref + torch.stack([(qg.T @ m @ qa) ** 2 for m in mats], -1) / len(grads)
        assert s[name].shape == ref.shape
        assert rel(s[name], ref) < 1e-4


def test_diagonal_fisher_matches_a_per_example_loop():
    model = tiny_net(bias=True)
    dl = loader(10, batch=4)
    diag = diagonal_fisher(model, dl, num_examples=10, fisher="empirical", chunk=3)
    x, y = next(iter(DataLoader(dl.dataset, batch_size=10)))
    grads = per_example_grads(model, x, y)
    for k in diag:
        ref = sum(g[k] ** 2 for g in grads) / 10
        assert rel(diag[k], ref) < 1e-5, k


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="form: unknown 'full'"):
        compute_kfac(tiny_net(), loader(), form="full")
    with pytest.raises(ValueError, match="fisher: unknown 'expected'"):
        compute_kfac(tiny_net(), loader(), fisher="expected")
    with pytest.raises(ValueError, match="layers"):
        compute_kfac(tiny_net(), loader(), layers=["1"])


def _relu_net(inplace: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(3, 3, 3),
                         nn.ReLU(inplace=inplace), nn.Flatten(), nn.Linear(48, 4))


def test_in_place_activations_after_a_layer_give_the_same_curvature():
    """torchvision's ResNet / MobileNet put nn.ReLU(inplace=True) right after a layer: K-FAC, EKFAC and the
    diagonal Fisher must equal those of the same net with out-of-place ReLUs (oracle-tested above)."""
    loader = random_loader(16, (2, 6, 6), 4, batch=8, seed=1)
    results = []
    for inplace in (False, True):
        net = _relu_net(inplace)
        kfac = compute_kfac(net, loader, fisher="empirical", num_batches=2)
        results.append(({f"{n}.{f}": getattr(kfac[n], f) for n in kfac for f in ("A", "G")}
                        | {f"ekfac.{n}": v for n, v in ekfac_correction(net, kfac, loader, 16, "empirical").items()}
                        | {f"fisher.{n}": v for n, v in diagonal_fisher(net, loader, 16, "empirical").items()}))
    assert results[0].keys() == results[1].keys()
    for key, ref in results[0].items():
        assert torch.allclose(results[1][key], ref, rtol=1e-6, atol=1e-10), key


def test_grouped_convolutions_are_skipped_and_refused_by_name():
    """A depthwise conv's Fisher block is one Kronecker product per group: K-FAC lists it as skipped, and
    naming it raises, instead of returning factors whose size does not match the weight."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 6, 1), nn.Flatten(), nn.Linear(96, 2))
    loader = random_loader(8, (4, 6, 6), 2, batch=8, seed=None)
    kfac = compute_kfac(model, loader, num_batches=1)
    assert set(kfac) == {"1", "3"} and "0" in kfac.skipped
    for name, lf in kfac.items():
        w = lf.module.weight
        assert lf.G.shape[0] == w.shape[0] and lf.A.shape[0] == w.shape[1] + (lf.module.bias is not None)
    with pytest.raises(ValueError, match=r"layers: \['0'\] are grouped / depthwise"):
        compute_kfac(model, loader, num_batches=1, layers=["0"])


def _param_slices(model):
    """{parameter name: slice of the flat parameter vector (model.parameters() order)}."""
    out, i = {}, 0
    for k, p in model.named_parameters():
        out[k] = slice(i, i + p.numel())
        i += p.numel()
    return out


def _block_index(model, name):
    """Flat indices of layer `name`'s K-FAC block, row-major over (output, input coordinate), bias last in a row."""
    where, m = _param_slices(model), model.get_submodule(name)
    w = where[f"{name}.weight"]
    idx = torch.arange(w.start, w.stop).reshape(m.weight.shape[0], -1)
    if m.bias is not None:
        b = where[f"{name}.bias"]
        idx = torch.cat([idx, torch.arange(b.start, b.stop)[:, None]], 1)
    return idx.flatten()


@pytest.mark.parametrize("n", [5, 12])
def test_exact_fisher_matches_the_dense_fisher_at_two_sample_counts(n):
    """fisher="exact" sums the label expectation in closed form: the diagonal Fisher equals the dense Fisher's
    diagonal, and EKFAC's moments equal the dense Fisher's diagonal in the Kronecker eigenbasis, at any sample count
    (notebook 07 compares these values across sample counts)."""
    model = tiny_net().double()
    dl = DataLoader(TensorDataset(*(t.double() if t.is_floating_point() else t for t in loader(n).dataset.tensors)),
                    batch_size=4)
    x = dl.dataset.tensors[0]
    dense = dense_fisher(model, x)
    where = _param_slices(model)
    diag = diagonal_fisher(model, dl, num_examples=n, fisher="exact", chunk=3)
    for k, d in diag.items():
        assert rel(d.flatten(), dense.diagonal()[where[k]]) < 1e-10, k
    kfac = compute_kfac(model, dl, fisher="exact", num_batches=3, form="im2col")
    s = ekfac_correction(model, kfac, dl, num_examples=n, fisher="exact")
    for name in ("3", "6"):
        _, qa, _, qg = kfac[name].eig()
        idx = _block_index(model, name)
        block = dense[idx][:, idx]
        basis = torch.kron(qg, qa)  # column (i, j) = q_G[:, i] ⊗ q_A[:, j]
        ref = (basis.T @ block @ basis).diagonal().reshape(qg.shape[1], qa.shape[1], 1)
        assert rel(s[name], ref) < 1e-10, name


def test_true_fisher_is_an_unbiased_draw_of_the_exact_one():
    """The sampled ("true") Fisher averages to the exact one: same normalisation, only sampling noise differs."""
    model = tiny_net()
    dl = loader(4)
    exact = compute_kfac(model, dl, fisher="exact", num_batches=1)
    torch.manual_seed(0)
    drawn = compute_kfac(model, dl, fisher="true", num_batches=1, mc_samples=4000)
    for name in ("0", "3", "6"):
        assert rel(drawn[name].G, exact[name].G) < 0.05, name
        assert torch.equal(drawn[name].A, exact[name].A)


def test_one_example_exact_fisher_of_the_classifier_is_g_kron_a():
    """For one input, the exact Fisher block of a Linear classifier is E_{y~p}[δδᵀ] ⊗ a aᵀ = G ⊗ A, no approximation."""
    model = tiny_net(bias=True).double()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    dl = DataLoader(TensorDataset(x, torch.zeros(1, dtype=torch.long)), batch_size=1)
    lf = compute_kfac(model, dl, fisher="exact", num_batches=1, layers=["6"])["6"]
    dense, idx = dense_fisher(model, x), _block_index(model, "6")
    assert rel(torch.kron(lf.G, lf.A), dense[idx][:, idx]) < 1e-10


def assert_same_curvature(a: nn.Module, b: nn.Module, layer: str, x: torch.Tensor, classes: int, form: str) -> None:
    """Two float64 models computing the same function with `layer` written two ways: equal K-FAC factors of
    every layer and equal EKFAC moments of `layer` (exact Fisher, batches of 5, ≤ 1e-10)."""
    with torch.no_grad():
        b.get_submodule(layer).weight.copy_(a.get_submodule(layer).weight.reshape(b.get_submodule(layer).weight.shape))
        b.get_submodule(layer).bias.copy_(a.get_submodule(layer).bias)
        b.head.load_state_dict(a.head.state_dict())
    loader = DataLoader(TensorDataset(x, torch.randint(0, classes, (len(x),))), batch_size=5)
    ka = compute_kfac(a, loader, form=form, fisher="exact", num_batches=3)
    kb = compute_kfac(b, loader, form=form, fisher="exact", num_batches=3)
    for name in (layer, "head"):
        assert rel(ka[name].A, kb[name].A) <= 1e-10 and rel(ka[name].G, kb[name].G) <= 1e-10
    ea = ekfac_correction(a, ka, loader, num_examples=len(x), fisher="exact")
    eb = ekfac_correction(b, kb, loader, num_examples=len(x), fisher="exact")
    assert rel(ea[layer], eb[layer]) <= 1e-10


class TokenMixer(nn.Module):
    """A Linear layer applied to every token of (N, T, D) inputs, mean over tokens, a Linear head; or the same
    computation as a 1x1 Conv2d over a (N, D, 1, T) image (`as_conv`)."""

    def __init__(self, as_conv: bool):
        super().__init__()
        self.as_conv = as_conv
        self.mix = nn.Conv2d(5, 6, 1) if as_conv else nn.Linear(5, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        if self.as_conv:
            return self.head(torch.tanh(self.mix(x.transpose(1, 2).unsqueeze(2))).mean((2, 3)))
        return self.head(torch.tanh(self.mix(x)).mean(1))


@pytest.mark.parametrize("form", ["channel_patch", "im2col"])
def test_linear_on_tokens_takes_the_expand_form_of_a_1x1_conv(form):
    """K-FAC's "expand" form (Eschenhagen et al. 2023) for a Linear layer on (N, T, D): tokens count as positions,
    so its factors, EKFAC moments and exact Fisher equal those of the same map written as a 1x1 conv over T pixels."""
    torch.manual_seed(0)
    assert_same_curvature(TokenMixer(as_conv=False).double(), TokenMixer(as_conv=True).double(), "mix",
                          torch.randn(12, 7, 5, dtype=torch.float64), 3, form)


class Signal(nn.Module):
    """Conv1d (stride 2, padding 1, dilation 2) over (N, 3, L), pooled, a Linear head; or the same computation as a
    Conv2d with a (1, k) kernel over (N, 3, 1, L) (`as_image`)."""

    def __init__(self, as_image: bool):
        super().__init__()
        self.as_image = as_image
        kw = dict(stride=2, padding=1, dilation=2)
        self.conv = (nn.Conv2d(3, 4, (1, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 2)) if as_image
                     else nn.Conv1d(3, 4, 3, **kw))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x.unsqueeze(2) if self.as_image else x)
        return self.head(torch.tanh(h).flatten(2).mean(2))


@pytest.mark.parametrize("form", ["channel_patch", "im2col"])
def test_conv1d_factors_are_those_of_a_height_one_conv2d(form):
    """K-FAC of a Conv1d reads it as a Conv2d of height 1: factors and EKFAC moments equal those of that Conv2d
    (float64, exact Fisher, ≤ 1e-10)."""
    torch.manual_seed(0)
    assert_same_curvature(Signal(False).double(), Signal(True).double(), "conv",
                          torch.randn(10, 3, 17, dtype=torch.float64), 2, form)


class TinyBlock(nn.Module):
    """A transformer-style MLP block on (N, T, D) tokens: LayerNorm, Linear -> GELU -> Linear with a residual, mean
    over tokens, a Linear head (every Linear with a bias: A carries the homogeneous coordinate)."""

    def __init__(self, d: int = 4, hidden: int = 6, classes: int = 3):
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(d), nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = x + self.down(F.gelu(self.up(self.norm(x))))
        return self.head(x.mean(1))


@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_kfac_of_weight_shared_linear_layers_equals_curvlinops(approx):
    """Oracle: curvlinops' KFACLinearOperator (type-2 = the exact Fisher, weight and bias joint, kfac_approx
    "expand" | "reduce") gives the same A and G for every Linear layer of a tiny transformer block (float64,
    ≤ 1e-10), over two batches."""
    from curvlinops import KFACLinearOperator

    torch.manual_seed(0)
    model = TinyBlock().double()
    x, y = torch.randn(12, 5, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    ours = compute_kfac(model, loader, fisher="exact", num_batches=2, approx=approx)
    params = [p for n, p in model.named_parameters() if not n.startswith("norm.")]
    reference = KFACLinearOperator(model, nn.CrossEntropyLoss(), params, list(loader), fisher_type="type-2",
                                   kfac_approx=approx, separate_weight_and_bias=False, check_deterministic=False)
    reference.compute_kronecker_factors()
    state = reference.state_dict()
    for name in ("up", "down", "head"):
        assert rel(ours[name].A, state["input_covariances"][name]) <= 1e-10, name
        assert rel(ours[name].G, state["gradient_covariances"][name]) <= 1e-10, name
    if approx == "reduce":  # the pooled head sees one position per example: both forms agree there
        assert rel(ours["head"].A, compute_kfac(model, loader, fisher="exact", num_batches=2)["head"].A) <= 1e-12


def test_kfac_approx_is_checked():
    model = TinyBlock().double()
    loader = DataLoader(TensorDataset(torch.randn(4, 5, 4, dtype=torch.float64), torch.randint(0, 3, (4,))))
    with pytest.raises(ValueError, match="approx"):
        compute_kfac(model, loader, approx="mean")


class LinearPool(nn.Module):
    """A Linear layer on every token of (N, T, D), the mean over tokens, a Linear head: linear up to the logits."""

    def __init__(self):
        super().__init__()
        self.mix, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.mix(x).mean(1))


def test_reduce_form_is_the_dense_ggn_of_one_sequence():
    """Oracle: the dense GGN (= exact Fisher for softmax cross-entropy). For one example whose tokens are pooled
    right after a weight-shared Linear layer, ∇W ℓ = δ ā ᵀ with ā the token-mean input, so its Fisher block is
    exactly G ⊗ A in the "reduce" form (Eschenhagen et al. 2023), while "expand" (tokens as examples) is not."""
    torch.manual_seed(0)
    model = LinearPool().double()
    x = torch.randn(1, 7, 5, dtype=torch.float64)
    dl = DataLoader(TensorDataset(x, torch.zeros(1, dtype=torch.long)), batch_size=1)
    dense = dense_fisher(model, x)
    idx = _block_index(model, "mix")
    block = dense[idx][:, idx]
    reduce = compute_kfac(model, dl, fisher="exact", num_batches=1, approx="reduce")["mix"]
    expand = compute_kfac(model, dl, fisher="exact", num_batches=1, approx="expand")["mix"]
    assert rel(torch.kron(reduce.G, reduce.A), block) < 1e-10
    assert rel(torch.kron(expand.G, expand.A), block) > 1e-2


def tiny_vit():
    """The kit's vit_tiny (timm's VisionTransformer) on 8×8 images: 16 patches of 2×2 and a class token, 3 classes,
    float64."""
    from pruning_lib.models import vit_tiny
    torch.manual_seed(0)
    model = vit_tiny(1, 1, 3, 8).double()
    return model.eval()


def test_ekfac_and_diagonal_fisher_of_a_vit_match_a_per_example_loop():
    """On timm's ViT (token inputs (N, T, D) to qkv, proj and the MLP): EKFAC's moments (the "expand" form's
    eigenbasis) and the diagonal Fisher equal those of per-example gradients from a plain loop (empirical Fisher,
    float64)."""
    model = tiny_vit()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))
    dl = DataLoader(TensorDataset(x, y), batch_size=3)
    layers = ["blocks.0.attn.qkv", "blocks.1.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]
    kfac = compute_kfac(model, dl, fisher="empirical", num_batches=2, layers=layers)
    s = ekfac_correction(model, kfac, dl, num_examples=6, fisher="empirical")
    grads = per_example_grads(model, x, y)
    for name in layers:
        _, qa, _, qg = kfac[name].eig()
        mats = [torch.cat([g[f"{name}.weight"], g[f"{name}.bias"][:, None]], 1) for g in grads]
        ref = sum((qg.T @ m @ qa) ** 2 for m in mats).unsqueeze(-1) / len(mats)
        assert rel(s[name], ref) < 1e-10, name
    diag = diagonal_fisher(model, dl, num_examples=6, fisher="empirical", chunk=4)
    for k in [f"{n}.weight" for n in layers] + ["cls_token", "pos_embed"]:
        assert rel(diag[k], sum(g[k] ** 2 for g in grads) / 6) < 1e-10, k
