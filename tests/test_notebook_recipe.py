"""notebook.DIGITS_RECIPE is configs/quickstart.json's baseline recipe, under the cache key of its checkpoints."""
import json
from pathlib import Path

from pruning_lib import notebook
from pruning_lib.config import Config
from pruning_lib.train import TrainRecipe

ROOT = Path(__file__).resolve().parents[1]


def test_digits_recipe_is_the_quickstart_baseline_with_the_same_cache_key():
    from pruning_lib.notebook import DIGITS_RECIPE

    cfg = json.loads((ROOT / "configs" / "quickstart.json").read_text())
    assert DIGITS_RECIPE == Config(exp_name="q", baseline=cfg["baseline"]).baseline_recipe()
    # the recipe the notebooks used before it was read from the config: the cached checkpoint's name is kept
    old = TrainRecipe(epochs=15, lr=0.1, batch_size=64, weight_decay=5e-4, schedule="cosine")
    assert DIGITS_RECIPE == old and DIGITS_RECIPE.key() == old.key() == "c5b566e5b5"
    assert notebook.digits_recipe() is DIGITS_RECIPE


def test_adamw_trains_and_only_changes_the_key_when_chosen():
    """optimizer "adamw" lowers the training loss of a tiny ViT on a fixed batch; an SGD recipe's cache key is the
    one it had before the field existed (baselines cached then still load)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from pruning_lib.models import vit_tiny
    from pruning_lib.train import evaluate, train
    assert TrainRecipe().key() == "3aa0a17aea" and TrainRecipe(optimizer="adamw").key() != "3aa0a17aea"
    torch.manual_seed(0)
    model = vit_tiny(1, 1, 10, 8)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    before = evaluate(model, loader)["loss"]
    train(model, loader, TrainRecipe(epochs=40, lr=1e-2, weight_decay=0.05, optimizer="adamw", select_on_val=False),
          progress=False)
    assert evaluate(model, loader)["loss"] < 0.5 * before
