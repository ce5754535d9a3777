"""Post-training weight pruning from calibration inputs, no labels and no fine-tuning needed: Wanda (wanda.py) and
SparseGPT (sparsegpt.py), unstructured or N:M semi-structured (methods/patterns.py, shared with magnitude
pruning), layer after layer on the inputs the already-pruned layers before produce (calibration.py: the one
sequential loop both share)."""
from .sparsegpt import prune_sparsegpt, sparsegpt_layer
from .wanda import prune_wanda, wanda_mask, wanda_scores

__all__ = ["prune_sparsegpt", "prune_wanda", "sparsegpt_layer", "wanda_mask", "wanda_scores"]
