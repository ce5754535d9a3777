"""Shared test fixtures: one intra-op thread: the unit tests use tiny tensors, where more threads only add contention."""
import torch

torch.set_num_threads(1)
