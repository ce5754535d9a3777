"""The `pruning-kit` command (pruning_lib/cli.py): help for every subcommand, the registry and the support matrix
printed, a model file pruned and exported to a program that runs without the kit, and every bad argument one line
on stderr with exit code 2, before any work (the output file is never written)."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from pruning_lib import cli
from pruning_lib.export import load_program
from pruning_lib.models import build_model
from pruning_lib.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pruning-kit": "pruning_lib.cli:main"}


@pytest.mark.parametrize("command", [[], ["run"], ["merge"], ["methods"], ["support"], ["prune"]])
def test_help(command):
    p = subprocess.run([sys.executable, "-m", "pruning_lib.cli", *command, "--help"], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 0 and "usage: pruning-kit" in p.stdout


def test_methods_lists_the_registry(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, method in METHODS.items():
        assert f"{name} ({method.family}): {method.summary}" in out
    assert cli.main(["methods", "obs"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("obs (channel)") and all(f"  {k} = " in out for k in METHODS["obs"].options)
    assert "saliency = \"diag\"  (diag | kron)" in out


def test_support_prints_the_matrix(capsys):
    assert cli.main(["support"]) == 0
    assert "| network |" in capsys.readouterr().out


def test_prune_a_model_file(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "resnet8.pt"
    model = build_model("resnet8", in_channels=1, num_classes=10, image_size=8)
    torch.save(model.state_dict(), weights)
    out = tmp_path / "pruned.pt2"
    code = cli.main(["prune", "--model", "kit:resnet8", "--weights", str(weights), "--method", "l1", "--target", "0.5",
                     "--data", "digits", "--out", str(out), "--option", "normalize=sum"])
    assert code == 0 and "l1: removed 5" in capsys.readouterr().out
    program = load_program(out).module()
    assert program(torch.zeros(5, 1, 8, 8)).shape == (5, 10)  # any batch size


@pytest.mark.parametrize("args,names", [
    (["--method", "nope"], "--method: unknown 'nope'"),
    (["--target", "1.5"], "--target: 1.5 is outside [0, 1)"),
    (["--target", "half"], "argument --target: invalid float value"),
    (["--option", "layer_cap=2"], "--option layer_cap"),
    (["--option", "colour=1"], "--option colour"),
    (["--option", "novalue"], "is not KEY=VALUE"),
    (["--data", "imagenet"], "--data: unknown 'imagenet'"),
    (["--out", "pruned.pkl"], "--out: 'pruned.pkl' must end in .pt2 or .onnx"),
    (["--weights", "missing.pt"], "--weights: 'missing.pt' is not a file"),
    (["--model", "resnet8"], "--model: 'resnet8' is not SOURCE:NAME"),
    (["--model", "kit:resnet9000"], "--model: 'kit:resnet9000'"),
    (["--model", "torchvision:resnet18"], "does not run on digits's inputs"),
])
def test_every_bad_argument_is_one_line_and_exit_2(tmp_path, capsys, args, names):
    base = {"--model": "kit:resnet8", "--method": "l1", "--target": "0.5", "--data": "digits",
            "--out": str(tmp_path / "m.pt2")}
    given = dict(zip(args[::2], args[1::2]))
    argv = ["prune", *[x for k, v in {**base, **given}.items() if k != "--option" for x in (k, v)],
            *(["--option", given["--option"]] if "--option" in given else [])]
    if "--weights" in given:
        argv[argv.index("--weights") + 1] = str(tmp_path / given["--weights"])
        names = names.replace("'missing.pt'", repr(str(tmp_path / "missing.pt")))
    if "--out" in given:
        argv[argv.index("--out") + 1] = given["--out"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert names in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "m.pt2").exists()


def test_unknown_subcommand_and_method_name(capsys):
    assert cli.main(["prnue"]) == 2
    assert cli.main(["methods", "l2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "invalid choice: 'prnue'" in err[0] and "methods: unknown 'l2'" in err[1]
