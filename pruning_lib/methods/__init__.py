"""The pruning methods, one module (or package) per family. A method may import curvature/, metrics, models,
train, pruner and checks; never viz/ or widgets/. Each is registered in registry.METHODS."""
