"""Train / eval mode switches that put the model back as it was, even when the body raises."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with `model` in eval mode (BatchNorm uses and keeps its running statistics, dropout is
    off); restore the model's previous train / eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
