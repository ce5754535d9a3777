"""Channel pruning that physically removes channels: the group engine (groups.py; which layers it slices:
layers.py; the closed-form cost of a plan: costs.py; the shared schedule: schedule.py), first-order criteria
(criteria.py: L1, Taylor, random), second-order criteria (second_order.py: C-OBD, C-OBS), save / load
(io.py), attention heads as groups (heads.py). The names below are the public API (`from pruning_lib.methods import channel as ch`)."""
from .criteria import l1_scores, prune_l1, prune_random, prune_taylor, random_group_scores, taylor_scores
from .groups import ChannelGroup, ChannelPruner, rounded_width
from .schedule import Selection, run_channel_method, select
from .layers import check_supported
from .heads import attention_layers, head_scores
from .io import layer_widths, load_pruned, save_pruned

__all__ = ["ChannelGroup", "ChannelPruner", "Selection", "attention_layers", "check_supported", "head_scores",
           "l1_scores", "layer_widths",
           "load_pruned", "prune_l1", "prune_random", "prune_taylor", "random_group_scores", "rounded_width",
           "run_channel_method", "save_pruned", "select", "taylor_scores"]
