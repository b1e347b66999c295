"""`ude fit` spares its process torch._dynamo, the library's fit() its own duration, and that changes nothing
in the numbers."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO

# Fit the sample UDE (the collocation warm start, then Adam and LBFGS on the trajectory) and print the
# fitted values, the weights, the loss history and whether torch._dynamo got imported.
SCRIPT = """
import contextlib, json, sys
if sys.argv[1] == "lean":  # the command line: for the whole process
    from ude_cli.fitting.lean_torch import skip_compile_machinery
    assert skip_compile_machinery() > 0
if sys.argv[1] == "torch":  # torch's own behaviour: the library without its scoped savings
    import ude_cli.fitting.lean_torch
    ude_cli.fitting.lean_torch.compile_machinery_skipped = contextlib.nullcontext
from ude_cli import fit
from ude_cli.config import config_from_dict
import yaml
raw = yaml.safe_load(open(sys.argv[2]))
raw["data"]["file"] = sys.argv[3]
raw["training"] = {"stages": [{"optimizer": "adam", "iterations": 5}, {"optimizer": "lbfgs", "iterations": 10}],
                   "warm_start_iterations": 20}
result = fit(config_from_dict(raw, label="lv"))
weights = result.model.rhs.networks["U"].weights[0].detach().flatten().tolist()
dynamo = "torch._dynamo" in sys.modules
import torch  # after the fit, an optimiser of the user's own: torch's behaviour, unless the process is lean
p = torch.nn.Parameter(torch.ones(2))
opt = torch.optim.Adam([p])
p.sum().backward()
opt.step()
print(json.dumps({"dynamo": dynamo, "values": result.values, "weights": weights,
                  "loss": result.history["loss"].tolist(), "dynamo_after": "torch._dynamo" in sys.modules}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(REPO / "configs/lotka_volterra.yaml"),
                          str(REPO / "data/lotka_volterra.csv")], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_dynamo_import_and_identical_fit():
    plain, lean, library = _run("torch"), _run("lean"), _run("library")
    assert plain["dynamo"] is True  # torch's own behaviour: the optimisers import it
    assert lean["dynamo"] is False and library["dynamo"] is False  # the command line, and the library's fit()
    for spared in (lean, library):
        assert spared["values"] == plain["values"]
        assert spared["weights"] == plain["weights"]  # bit for bit
        assert spared["loss"] == plain["loss"]
    assert library["dynamo_after"] is True  # after fit(), the user's own optimiser behaves as torch's


def test_left_alone_once_dynamo_is_imported():
    code = ("import torch._dynamo\nfrom ude_cli.fitting.lean_torch import skip_compile_machinery\n"
            "print(skip_compile_machinery())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
