"""The fit in torch: the model (parameters, initial states, networks, the hybrid right-hand side),
the training stages and their helpers (collocation warm start, multistart, one flat buffer).
"""
