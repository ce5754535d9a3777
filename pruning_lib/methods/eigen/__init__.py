"""The eigen family: structured pruning in a layer's (Kronecker-factored) eigenbasis, convolutions rebuilt as
1x1 -> core -> 1x1 bottlenecks, Linear layers as rank-r pairs (the core folded into one side; DESIGN.md §7).

  basis.py        eigenbases, rotation W* = Q_Gᵀ W Q_A, direction scores (K-FAC, EKFAC, Frobenius), eigenvalue floor
  select.py       global threshold, per-layer cap, parameter / direction targets, cost budgets
  rebuild.py      EigenBottleneck, EigenPair, the rank-r rebuild (rotations merged), the one builder
  subspaces.py    which subspace a rebuilt layer keeps: eigenbasis, tucker, whitened
  eigendamage.py  EigenOptions (the shared options), registry entry `eigendamage` and its schedule
  improved.py     registry entry `improved_eigendamage` (EKFAC, subspace, budget, regrow) and its schedule

Import the module you need (from pruning_lib.methods.eigen import basis, ...); this package re-exports nothing.
"""
