"""ipywidgets for the notebooks, one module per topic: each binds a pure library function (expensive scores
computed once, a slider only re-thresholds) to a plot from viz/. Library code below this folder never imports it."""
