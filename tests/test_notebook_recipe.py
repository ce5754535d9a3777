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
