"""Many fits: outcomes of a batch, sweeps over a grid of config values, Dask clusters.
"""
