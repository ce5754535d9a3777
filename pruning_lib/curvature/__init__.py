"""Curvature toolkit: K-FAC / EKFAC factors and the diagonal Fisher (kfac.py); Hessian-vector products,
top eigenvalues, trace and spectral density (hessian.py)."""
from .kfac import KFAC, LayerKFAC, compute_kfac, diagonal_fisher, ekfac_correction

__all__ = ["KFAC", "LayerKFAC", "compute_kfac", "diagonal_fisher", "ekfac_correction"]
