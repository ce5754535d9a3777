"""Curvature toolkit: K-FAC / EKFAC factors and the diagonal Fisher (kfac.py); Hessian-vector products,
top eigenvalues, trace and spectral density (hessian.py)."""
from .hessian import HessianOperator, hutchinson_trace, lanczos, layer_operator, spectral_density, top_eigenpairs
from .kfac import KFAC, LayerKFAC, compute_kfac, diagonal_fisher, ekfac_correction

__all__ = ["KFAC", "LayerKFAC", "compute_kfac", "diagonal_fisher", "ekfac_correction", "HessianOperator",
           "hutchinson_trace", "lanczos", "layer_operator", "spectral_density", "top_eigenpairs"]
