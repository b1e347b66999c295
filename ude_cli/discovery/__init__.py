"""Equations from the learned terms: sparse regression against the network, refits of candidate
models to the data (numpy/scipy), extrapolation, the verdict and its files and figures.
"""
