"""Shared test fixtures: small thread count so parallel test runs stay predictable."""
import torch

torch.set_num_threads(2)
