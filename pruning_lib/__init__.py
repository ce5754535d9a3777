"""pruning_lib: pruning algorithms for PyTorch (weight, channel, low-rank, EigenDamage), device-agnostic.

`pruning_lib.prune(model, method, target, loader=...)` prunes your own model with any registered method."""
__version__ = "0.1.0"

from .api import prune  # noqa: E402  (after __version__: the modules below do not need it)

__all__ = ["prune"]
