"""PEtab SciML networks as torch modules: the network YAML's layers (:mod:`.layers`) evaluated along its
forward graph (:mod:`.graph`, operations in :mod:`.functions`), and the adapter that makes such a network a
``ude`` network term, point by point and batched over starts (:mod:`.batched`)."""

from .graph import GraphNetwork, load_hdf5, read_graph, set_arrays

__all__ = ["GraphNetwork", "load_hdf5", "read_graph", "set_arrays"]
