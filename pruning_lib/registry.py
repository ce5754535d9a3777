"""The method registry: one entry per pruning method, all with the call shape
`fn(model, ctx: PruneContext, target: float, **options) -> PruneResult`. Add a method by writing its function
under methods/ (decorated with checks.checked) and adding an entry here; tests/test_contract.py then holds it
to the rules every method keeps. Option defaults and allowed strings come from the function itself.

A config may list one method several times as variants, "name@label" (e.g. "l1@mean" with its own
method_options), so one table compares option settings on the same baselines.

Each entry says when the method reads training batches (`data`, a predicate of its options): the scores of
taylor, obd, obs and the eigen methods come from batches; whitened_svd whitens by input statistics of batches;
wanda and sparsegpt read calibration inputs (no labels) from batches; l1 and random with steps > 1 re-estimate
BatchNorm statistics on batches between steps; magnitude and the
other low-rank methods (spectra of the weights, rank rules budget / energy / vbmf) never do. pruning_lib.prune
asks it before any work."""
from __future__ import annotations

import re

from .methods import lowrank, posttrain, weight, whitened_svd
from .methods.channel import criteria, second_order
from .methods.eigen import eigendamage, improved
from .pruner import Method, no_data


def scores_from_batches(options: dict) -> str:
    """Data predicate: the scores come from training batches."""
    return "scores with training batches"


def inputs_from_batches(options: dict) -> str:
    """Data predicate: the layers are whitened by input statistics of training batches."""
    return "whitens each layer by input statistics of training batches"


def calibration_inputs(options: dict) -> str:
    """Data predicate: each layer's mask comes from calibration inputs of training batches (labels unused)."""
    return "measures each layer's inputs on calibration examples of training batches"


def steps_reestimate_bn(options: dict) -> str | None:
    """Data predicate: with steps > 1, BatchNorm statistics are re-estimated on training batches between steps."""
    if options.get("steps", 1) > 1:
        return f"with steps={options['steps']} re-estimates BatchNorm statistics on training batches between steps"
    return None


def compensable(fn, summary: str, family: str, data=no_data) -> Method:
    """A structured method with the `compensate` / `calibration` options (posttrain.with_compensation); with
    compensate=True it reads calibration examples of training batches."""
    return Method(posttrain.with_compensation(fn), summary, family, data=posttrain.compensation_data(data))


VARIANT = re.compile(r"[A-Za-z0-9_.-]+")

METHODS: dict[str, Method] = {
    "magnitude_global": Method(weight.prune_global, "unstructured |w| pruning, one global threshold", "weight"),
    "magnitude_layerwise": Method(weight.prune_layerwise, "unstructured |w| pruning, same fraction per layer",
                                  "weight"),
    "wanda": Method(posttrain.prune_wanda, "post-training: |W_ij|·‖X_j‖ per output row (Wanda), layer after layer on "
                    "calibration inputs; unstructured or N:M", "weight", data=calibration_inputs),
    "sparsegpt": Method(posttrain.prune_sparsegpt, "post-training: OBS on the layer's reconstruction loss with the "
                        "kept weights updated (SparseGPT), layer after layer; unstructured or N:M", "weight",
                        data=calibration_inputs),
    "eigendamage": compensable(eigendamage.prune_eigendamage,
                          "EigenDamage: prune Kronecker-factored eigen-directions by K-FAC loss increase, "
                          "layers become 1x1 -> core -> 1x1", "eigen", data=scores_from_batches),
    "improved_eigendamage": compensable(improved.prune_improved_eigendamage,
                                   "EigenDamage with switchable ingredients: EKFAC scores, the subspace kept "
                                   "(eigenbasis | tucker | whitened), cost budget, iterative schedule", "eigen",
                                   data=scores_from_batches),
    "svd": compensable(lowrank.prune_svd,
                  "truncated SVD: conv -> k x k (C_in -> r) + 1x1 (r -> C_out), linear -> two linears; "
                  "ranks by rank_rule (budget | energy | vbmf) fitted to the target", "lowrank"),
    "whitened_svd": compensable(whitened_svd.prune_whitened_svd,
                           "activation-whitened SVD (SVD-LLM): truncate W A^½, A the layer's input second moment; "
                           "svd's form and rank rules", "lowrank", data=inputs_from_batches),
    "tucker": compensable(lowrank.prune_tucker,
                     "Tucker-2 (HOOI) of k x k convs -> 1x1 -> core -> 1x1; SVD of 1x1 convs; "
                     "ranks by rank_rule (budget | energy | vbmf) fitted to the target", "lowrank"),
    "cp": compensable(lowrank.prune_cp,
                 "CP (ALS) of k x k convs -> 1x1 -> depthwise kx1 -> depthwise 1xk -> 1x1; SVD of 1x1 convs; "
                 "ranks by rank_rule (budget | energy | vbmf) fitted to the target", "lowrank"),
    "l1": compensable(criteria.prune_l1, "channel pruning: smallest summed L1 norm Σ|W_c| per coupled group, "
                 "channels physically removed", "channel", data=steps_reestimate_bn),
    "taylor": compensable(criteria.prune_taylor, "channel pruning: first-order Taylor |Σ W·∂L/∂W| per channel, "
                     "averaged over batches", "channel", data=scores_from_batches),
    "random": compensable(criteria.prune_random, "channel pruning: uniformly random channels (baseline)", "channel",
                     data=steps_reestimate_bn),
    "obd": compensable(second_order.prune_obd, "channel pruning: C-OBD Σ W² F with the diagonal Fisher", "channel",
                  data=scores_from_batches),
    "obs": compensable(second_order.prune_obs, "channel pruning: C-OBS Σ W²/([G⁻¹]_cc [A⁻¹]_jj) with im2col K-FAC "
                  "and the OBS weight correction", "channel", data=scores_from_batches),
}
for _name, _method in METHODS.items():
    _method.name = _name


def method_of(entry: str) -> Method:
    """The registered Method of a config entry "name" or "name@label" (KeyError naming the entry)."""
    name, _, _ = entry.partition("@")
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}' in '{entry}', allowed: {', '.join(METHODS)}")
    return METHODS[name]


def entry_error(entry) -> str | None:
    """Why `entry` is not a method name or "name@label" variant (label: letters, digits, '_', '.', '-'), or None."""
    if not isinstance(entry, str):
        return f"{entry!r} is not a method name"
    name, at, label = entry.partition("@")
    if name not in METHODS:
        return f"unknown {name!r}, allowed: {', '.join(METHODS)} (a variant is name@label)"
    if at and not VARIANT.fullmatch(label):
        return f"variant label {label!r} must be letters, digits, '_', '.' or '-'"
    return None
