"""Identifiability: whether the data can tell a fit's parameters apart (and from its networks)."""
