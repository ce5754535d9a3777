"""Curvature toolkit: the Fisher's label side (fisher.py), K-FAC factors and eigenbases (kfac.py), EKFAC's
eigenbasis moments (ekfac.py), the diagonal Fisher (diagonal.py); Hessian-vector products, top eigenvalues, trace
and spectral density (hessian.py); dense matrices of tiny models for teaching and tests (dense.py)."""
from .diagonal import diagonal_fisher
from .ekfac import ekfac_correction
from .hessian import HessianOperator, hutchinson_trace, lanczos, layer_operator, spectral_density, top_eigenpairs
from .kfac import KFAC, LayerKFAC, compute_kfac

__all__ = ["KFAC", "LayerKFAC", "compute_kfac", "diagonal_fisher", "ekfac_correction", "HessianOperator",
           "hutchinson_trace", "lanczos", "layer_operator", "spectral_density", "top_eigenpairs"]
