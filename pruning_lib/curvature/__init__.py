"""Curvature toolkit: the Fisher's label side (fisher.py), K-FAC factors and eigenbases (kfac.py), EKFAC's
eigenbasis moments (ekfac.py), the diagonal Fisher (diagonal.py); Hessian-vector products, top eigenvalues, trace
and spectral density (hessian.py); dense matrices of tiny models for teaching and tests (dense.py); the one damping
rule (damping.py) and the one K-FAC quadratic form (quadratic.py). Batches: pruning_lib.batches.first_batches."""
from .damping import damp
from .diagonal import diagonal_fisher
from .ekfac import ekfac_correction
from .hessian import HessianOperator, hutchinson_trace, lanczos, layer_operator, spectral_density, top_eigenpairs
from .kfac import KFAC, LayerKFAC, compute_kfac
from .quadratic import kfac_predicted_increase, kfac_quadratic_form

__all__ = ["KFAC", "LayerKFAC", "compute_kfac", "damp", "diagonal_fisher", "ekfac_correction", "HessianOperator",
           "hutchinson_trace", "kfac_predicted_increase", "kfac_quadratic_form", "lanczos", "layer_operator",
           "spectral_density", "top_eigenpairs"]
