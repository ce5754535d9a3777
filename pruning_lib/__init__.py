"""pruning_lib: pruning algorithms for PyTorch (weight, channel, low-rank, EigenDamage), device-agnostic."""
__version__ = "0.1.0"
