"""Who solves the ODE: torchdiffeq (every method, the adjoint; the complete engine), and the compiled
engine (CasADi graphs of the trajectory and its gradient, optionally native code), which
accelerates training solves on the data's grid. The rule: everything the compiled engine does,
torchdiffeq can do too; dense grids, predictions and the adjoint stay with torchdiffeq.
"""
