"""Deployable output: every pruned model exports with torch.export and to ONNX (checked in onnxruntime), and an
exported program runs in a process that never imports the kit."""
import subprocess
import sys

import pytest
import torch
import torchvision

import pruning_lib
from pruning_lib import export
from pruning_lib.export import export_onnx, export_program, exported_size, load_program, onnx_max_error, save_program
from pruning_lib.metrics import count_params
from pruning_lib.models import build_model
from pruning_lib.registry import METHODS
from helpers import random_loader, short

SHAPE = (1, 8, 8)


def pruned(method: str, target: float = 0.5):
    torch.manual_seed(0)
    model = build_model("resnet8", 1, 1, 10)
    loader = random_loader(32, SHAPE, 10)
    return pruning_lib.prune(model, method, target, loader=loader, **short(method)).model.eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_pruned_model_exports_with_torch_export(method, tmp_path):
    model = pruned(method)
    x = torch.randn(3, *SHAPE)
    program = export_program(model, (x[:1],))
    with torch.no_grad():
        want = model(x[:1])
    assert torch.allclose(program.module()(x[:1]), want, atol=1e-5)
    again = load_program(save_program(program, tmp_path / "model.pt2"))
    assert torch.allclose(again.module()(x[:1]), want, atol=1e-5)


@pytest.mark.parametrize("method", ["magnitude_global", "l1", "svd", "tucker", "cp", "eigendamage"])
def test_one_model_per_family_exports_to_onnx_and_matches_in_onnxruntime(method, tmp_path):
    pytest.importorskip("onnxruntime")
    model = pruned(method, 0.7)
    x = torch.randn(1, *SHAPE)
    path = export_onnx(model, (x,), tmp_path / "model.onnx")
    assert onnx_max_error(path, model, (x,)) <= 1e-4


def test_an_exported_program_runs_without_the_kit(tmp_path):
    """An EigenDamage model is built of the kit's EigenBottleneck class; its exported program reloads and runs
    in a fresh interpreter that never imports pruning_lib."""
    model = pruned("eigendamage", 0.7)
    x = torch.randn(1, *SHAPE)
    path = save_program(export_program(model, (x,)), tmp_path / "m.pt2")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "want.pt")
    code = ("import sys, torch; p = torch.export.load(sys.argv[1]); x = torch.load(sys.argv[2], weights_only=True); "
            "want = torch.load(sys.argv[3], weights_only=True); assert 'pruning_lib' not in sys.modules; "
            "assert torch.allclose(p.module()(x), want, atol=1e-5); print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "want.pt")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("method", ["l1", "eigendamage"])
def test_torchvision_resnet18_pruned_exports(method, tmp_path):
    pytest.importorskip("onnxruntime")
    model = torchvision.models.resnet18(num_classes=2)
    result = pruning_lib.prune(model, method, 0.5, loader=random_loader(16, (3, 32, 32), 2, batch=8), **short(method))
    x = torch.randn(1, 3, 32, 32)
    path = export_onnx(result.model.eval(), (x,), tmp_path / "r18.onnx")
    assert onnx_max_error(path, result.model, (x,)) <= 1e-4
    # the weights are inside the one file (no .onnx.data beside it), so its size is the deployed size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.onnx"]
    assert exported_size(path) == path.stat().st_size > 4 * count_params(result.model)


def test_onnx_export_keeps_weights_beside_the_file_only_above_the_embed_limit(tmp_path, monkeypatch):
    model = pruned("l1", 0.5)
    x = torch.randn(1, *SHAPE)
    monkeypatch.setattr(export, "ONNX_EMBED_LIMIT", 1)
    path = export_onnx(model, (x,), tmp_path / "big.onnx")
    data = tmp_path / "big.onnx.data"
    assert data.is_file() and exported_size(path) == path.stat().st_size + data.stat().st_size
    assert onnx_max_error(path, model, (x,)) <= 1e-4


@pytest.mark.parametrize("method", ["magnitude_global", "random", "svd", "whitened_svd", "eigendamage",
                                    "improved_eigendamage"])
def test_a_pruned_vit_exports_with_torch_export_and_to_onnx(method, tmp_path):
    """timm's ViT pruned by each family (random removes whole heads: num_heads changes) runs the same as a
    torch.export program and in onnxruntime."""
    pytest.importorskip("onnxruntime")
    from pruning_lib.methods.channel.heads import attention_layers
    torch.manual_seed(0)
    model = build_model("vit_tiny", 1, 1, 10, 8)
    options = {"seed": 0} if method == "random" else short(method)
    result = pruning_lib.prune(model, method, 0.7, loader=random_loader(32, SHAPE, 10), **options)
    if method == "random":
        assert sum(a.num_heads for a in attention_layers(result.model).values()) < 4 * 4
    model = result.model.eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert (export_program(model, (x,)).module()(x) - model(x)).abs().max() <= 1e-5
    assert onnx_max_error(export_onnx(model, (x,), tmp_path / "vit.onnx"), model, (x,)) <= 1e-4
