"""Plots for the notebooks, one module per topic: each function draws on a given matplotlib Axes and returns
what it drew. Library code below this folder never imports it."""
