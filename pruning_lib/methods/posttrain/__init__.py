"""Post-training weight pruning from calibration inputs, no labels and no fine-tuning needed: Wanda (wanda.py) and
SparseGPT (sparsegpt.py), unstructured or N:M semi-structured (methods/patterns.py, shared with magnitude
pruning), layer after layer on the inputs the already-pruned layers before produce (calibration.py: the one
sequential loop both share). Compensation (compensation.py) refits what a structured method left, layer after
layer, to the dense network's outputs in least squares (option `compensate` of every channel, low-rank and eigen
method)."""
from .compensation import compensate_layers, compensation_data, least_squares_refit, with_compensation
from .sparsegpt import obc_row, prune_sparsegpt, sparsegpt_layer
from .wanda import prune_wanda, wanda_mask, wanda_scores

__all__ = ["compensate_layers", "compensation_data", "least_squares_refit", "obc_row", "prune_sparsegpt",
           "prune_wanda", "sparsegpt_layer", "wanda_mask", "wanda_scores", "with_compensation"]
