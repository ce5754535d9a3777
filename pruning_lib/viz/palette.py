"""One colour and one marker per method for every plot of the kit, keyed by the method's name, so that a method
looks the same in every figure whichever others are drawn beside it (notebook 08's checkboxes, the runner's plots).

Colours are ten distinct hues of matplotlib's tab10 plus mustard, black, a dark green for whitened_svd (svd's
family; its marker tells it from svd's green), and a brown and a dark grey for wanda and sparsegpt (magnitude's
family: grey); each method also
has its own marker, so that colour alone never has to tell two methods apart. A configured variant `name@label`
keeps its method's colour with a dashed line and a marker chosen by its label; a name the kit does not know (a
method a user registered) gets a colour chosen by a hash of the name, the same in every run.
"""
from __future__ import annotations

import zlib

# name -> (colour, marker); tests/test_viz_palette.py checks that every registered method has an entry.
METHOD_STYLES = {
    "magnitude_global": ("#7f7f7f", "x"),
    "magnitude_layerwise": ("#bcbd22", "+"),
    "wanda": ("#a6761d", "1"),
    "sparsegpt": ("#666666", "2"),
    "random": ("#8c564b", "."),
    "l1": ("#ff7f0e", "o"),
    "taylor": ("#e377c2", "s"),
    "obd": ("#9467bd", "^"),
    "obs": ("#17becf", "v"),
    "svd": ("#2ca02c", "D"),
    "whitened_svd": ("#00441b", "d"),
    "tucker": ("#1f77b4", "P"),
    "cp": ("#e6ab02", "X"),
    "eigendamage": ("#d62728", "*"),
    "improved_eigendamage": ("#000000", "h"),
}
OTHER_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
VARIANT_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p")


def _pick(options: tuple, key: str):
    """A member of `options` chosen by a stable hash of `key` (crc32: the same in every process)."""
    return options[zlib.crc32(key.encode()) % len(options)]


def method_style(name: str) -> dict:
    """Matplotlib keyword arguments (color, marker, linestyle) that draw method `name` the same way in every plot.

    `name@label` (a configured variant) takes its method's colour, a dashed line and a marker chosen by the label."""
    base, _, label = name.partition("@")
    colour, marker = METHOD_STYLES.get(base, (_pick(OTHER_COLOURS, base), "o"))
    if label:
        return {"color": colour, "marker": _pick(VARIANT_MARKERS, label), "linestyle": "--"}
    return {"color": colour, "marker": marker, "linestyle": "-"}
