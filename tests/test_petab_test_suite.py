"""The official PEtab test suite's SBML cases (vendored: tests/data/petab/test_suite, BSD-3): every case's
log-likelihood and simulations at the nominal values against its `_NNNN_solution.yaml`, at the case's own
tolerances (1e-3), or, for a feature ude does not read, the one line that says so (exit code 3 from the CLI).
The pass table is in docs/petab.md (`python bench/petab_test_suite.py --write docs/petab.md`)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ude_cli.errors import ConfigError
from ude_cli.petab import evaluate

SUITE = Path(__file__).resolve().parent / "data" / "petab" / "test_suite"
#: (version, case) -> what the refusal names: a compartment an SBML event changes (0016 also has an event
#: triggered by a state), an event triggered by a parameter's value
REFUSED = {
    ("v2.0.0", "0016"): "a compartment whose size changes", ("v2.0.0", "0030"): "a compartment whose size changes",
    ("v2.0.0", "0023"): "a trigger (p >= 500) with initialValue false is not supported",
}
CASES = sorted((v.name, c.name) for v in SUITE.iterdir() if v.is_dir() for c in v.iterdir() if c.is_dir())


def test_every_case_is_here():
    assert len([c for c in CASES if c[0] == "v1.0.0"]) == 20 and len([c for c in CASES if c[0] == "v2.0.0"]) == 31


@pytest.mark.parametrize("version, case", CASES, ids=[f"{v}-{c}" for v, c in CASES])
def test_case_against_its_solution(version, case):
    folder = SUITE / version / case
    problem = folder / f"_{case}.yaml"
    if (version, case) in REFUSED:
        with pytest.raises(ConfigError) as info:
            evaluate(problem)
        assert len(info.value.lines()) == 1 and REFUSED[(version, case)] in info.value.lines()[0]
        return
    solution = yaml.safe_load((folder / f"_{case}_solution.yaml").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate(problem)
    assert result.llh == pytest.approx(solution["llh"], abs=solution["tol_llh"])
    reference = pd.concat([pd.read_csv(folder / f, sep="\t") for f in solution["simulation_files"]])
    assert list(result.simulations["observableId"]) == list(reference["observableId"])
    assert np.allclose(result.simulations["time"], reference["time"])
    np.testing.assert_allclose(result.simulations["simulation"], reference["simulation"], rtol=0,
                               atol=solution["tol_simulations"])
    if "log_prior" in solution:  # 0024, 0025: v2's eleven priors, truncated to the bounds (or not), and the
        # implicit uniform prior of a parameter without one
        assert result.log_prior == pytest.approx(sum(solution["log_prior"].values()), abs=1e-12)
        assert result.log_posterior == pytest.approx(solution["unnorm_log_posterior"],
                                                     abs=solution["tol_unnorm_log_posterior"])


# -- variants of the suite's cases (a review's findings) -------------------------------------------------------------

def _variant(tmp_path: Path, case: str, file: str, old: str, new: str) -> Path:
    import shutil

    folder = tmp_path / case
    shutil.copytree(SUITE / "v2.0.0" / case, folder)
    text = (folder / file).read_text()
    assert old in text
    (folder / file).write_text(text.replace(old, new))
    return folder / f"_{case}.yaml"


@pytest.mark.parametrize("case, file, old, new, expected", [
    # a first period's target value that reads a state: PEtab v2 applies it before the model is initialized, and
    # allows only the parameter table's parameters there (a later period's may: a jump)
    ("0027", "_conditions.tsv", "offset_A1_c0 + offset_A2_c0", "offset_A1_c0 + A", "uses the state A: the first "
     "period's target values may use only the parameter table's parameters"),
    # with the parameters' nominal values, not a finite real number
    ("0026", "_conditions.tsv", "initial_A1 + initial_A2", "sqrt(-initial_A2)", "not a finite real number"),
    # values for placeholders the observable does not declare
    ("0003", "_observables.tsv", "\tobs_a_scale;obs_a_offset\n", "\t\n", "declares no observablePlaceholders"),
])
def test_bad_variants_are_one_line(tmp_path, case, file, old, new, expected):
    with pytest.raises(ConfigError) as info:
        evaluate(_variant(tmp_path, case, file, old, new))
    assert len(info.value.lines()) == 1 and expected in info.value.lines()[0]


def test_a_condition_formula_of_numbers_alone(tmp_path):
    """``9/3`` in the condition table is the number 3 (B's initial value, initial_B1/initial_B2 at their fixed
    values 9 and 3): the same llh as the case's own."""
    own = evaluate(SUITE / "v2.0.0" / "0026" / "_0026.yaml").llh
    assert evaluate(_variant(tmp_path, "0026", "_conditions.tsv", "initial_B1/initial_B2", "9/3")).llh == \
        pytest.approx(own, abs=1e-12)


def test_measured_at_steady_state_in_an_experiment_that_starts_at_5(tmp_path):
    """0029 starts at t = 5; with its measurements at time inf instead, the steady state is measured (at t0 = 5):
    the same llh as the case started at 0."""
    at5 = _variant(tmp_path / "a", "0029", "_measurements.tsv", "\t10.0\t", "\tinf\t")
    text = (at5.parent / "_measurements.tsv").read_text().replace("\t5.0\t", "\tinf\t")
    (at5.parent / "_measurements.tsv").write_text(text)
    measurements = (at5.parent / "_measurements.tsv").read_text()
    at0 = _variant(tmp_path / "b", "0029", "_experiments.tsv", "5.0", "0.0")
    (at0.parent / "_measurements.tsv").write_text(measurements)
    assert evaluate(at5).llh == pytest.approx(evaluate(at0).llh, abs=1e-9)


# -- periods after the first: jumps of the states (model.events) ----------------------------------------------------

def test_a_fixed_parameter_a_later_period_sets_becomes_a_state_that_jumps(tmp_path):
    """0028 with k2 fixed at 0.6 and set to 0 at t = 7 together with A + 5: A(10) is scipy's 0.5313487 (dA/dt =
    -k1 A + k2 B, solved in two pieces at rtol 1e-12), where it is 3.0428 when k2 stays."""
    problem = _variant(tmp_path, "0028", "_parameters.tsv", "k2\t0.0\t10.0\t0.6\ttrue", "k2\t0.0\t10.0\t0.6\tfalse")
    (problem.parent / "_conditions.tsv").write_text("conditionId\ttargetId\ttargetValue\n"
                                                    "condition1\tA\tA + 5.0\ncondition1\tk2\t0\n")
    result = evaluate(problem)
    assert result.simulations["simulation"].iloc[-1] == pytest.approx(0.5313487307607921, abs=1e-6)


@pytest.mark.parametrize("target, value, expected", [
    ("k1", "0", "sets the estimated parameter k1 at time 7: not supported yet"),
    ("A", "A +", "target A: 'A +' is neither a number nor a formula"),
])
def test_a_later_period_that_cannot_be_read_says_so(tmp_path, target, value, expected):
    problem = _variant(tmp_path, "0028", "_conditions.tsv", "condition1\tA\tA + 5.0", f"condition1\t{target}\t{value}")
    with pytest.raises(ConfigError) as info:
        evaluate(problem)
    assert len(info.value.lines()) == 1 and expected in info.value.lines()[0]


def test_two_conditions_of_one_period_that_set_one_target_are_refused(tmp_path):
    problem = _variant(tmp_path, "0031", "_conditions.tsv", "condition2\tB\tB + 3.0", "condition2\tA\tB + 3.0")
    with pytest.raises(ConfigError, match="two conditions at time 10.0 set A"):
        evaluate(problem)


# -- SBML events at a time: jumps of the states (model.events) -------------------------------------------------------

def _event(time: str, assignment: str = "<apply><plus/><ci> A </ci><cn> 5 </cn></apply>", initial: str | None = None,
           relation: str = "geq") -> str:
    """An SBML event that sets A at a time (SBML L2, the test suite's 0028, without a trigger's initial value;
    L3 with one)."""
    left, right = ("<csymbol encoding='text' definitionURL='http://www.sbml.org/sbml/symbols/time'> time </csymbol>",
                   time)
    if relation in ("leq", "lt"):
        left, right = right, left
    attributes = "" if initial is None else f" initialValue='{initial}' persistent='true'"
    return (f"</listOfReactions>\n    <listOfEvents><event id='dose' useValuesFromTriggerTime='true'><trigger{attributes}"
            f"><math xmlns='http://www.w3.org/1998/Math/MathML'><apply><{relation}/>{left}{right}"
            f"</apply></math></trigger><listOfEventAssignments><eventAssignment variable='A'><math "
            f"xmlns='http://www.w3.org/1998/Math/MathML'>{assignment}</math></eventAssignment>"
            f"</listOfEventAssignments></event></listOfEvents>")


@pytest.mark.parametrize("time, relation", [("<cn> 7 </cn>", "geq"), ("<cn> 7 </cn>", "lt"), ("<ci> t_dose </ci>", "gt")])
def test_an_sbml_event_at_a_time_is_the_later_period_it_replaces(tmp_path, time, relation):
    """0028's dose A + 5 at t = 7 written as an SBML event (time >= 7, 7 < time, or time > t_dose with t_dose set
    to 7 by the first period's condition) instead of a period: the case's own llh and simulations."""
    problem = _variant(tmp_path, "0028", "_model.xml", "</listOfReactions>", _event(time, relation=relation))
    folder = problem.parent
    (folder / "_experiments.tsv").write_text("experimentId\ttime\tconditionId\nexperiment1\t0.0\tcondition0\n")
    (folder / "_conditions.tsv").write_text("conditionId\ttargetId\ttargetValue\ncondition0\tt_dose\t7\n")
    (folder / "_mapping.tsv").write_text("petabEntityId\tmodelEntityId\tname\ncondition0\t\tcondition0\n")
    text = (folder / "_model.xml").read_text()
    (folder / "_model.xml").write_text(text.replace("<listOfParameters>", "<listOfParameters>\n"
                                                    "      <parameter id='t_dose' value='3' constant='true'/>"))
    solution = yaml.safe_load((SUITE / "v2.0.0" / "0028" / "_0028_solution.yaml").read_text())
    result = evaluate(problem)
    assert result.llh == pytest.approx(solution["llh"], abs=1e-6)
    assert list(result.simulations["simulation"]) == pytest.approx([1.0, 3.0428446239911824], abs=1e-6)


@pytest.mark.parametrize("initial, expected", [("false", 7.0), ("true", 2.0), (None, 2.0)])
def test_an_sbml_event_at_the_start_happens_when_its_trigger_was_false_before(tmp_path, initial, expected):
    """SBML L3's initialValue: false, the trigger time >= 0 turns true at the start and the event happens there
    (0022's A(0) = 2 becomes 7); true, or L2 without it, it never does."""
    case, old = ("0022", "</listOfRules>") if initial is not None else ("0028", "</listOfReactions>")
    event = _event("<cn> 0 </cn>", initial=initial)
    if initial is not None:  # 0022 has rules and no reactions
        event = event.replace("</listOfReactions>", "</listOfRules>")
    problem = _variant(tmp_path, case, "_model.xml", old, event)
    (problem.parent / "_experiments.tsv").write_text("experimentId\ttime\tconditionId\nexperiment1\t0.0\t\n")
    sims = evaluate(problem).simulations
    at0 = sims[(sims["time"] == 0) & (sims["observableId"] == ("obs_A" if initial is not None else "obs_a"))]
    assert at0["simulation"].iloc[0] == pytest.approx(expected if initial is not None else 1.0, abs=1e-9)


def test_an_sbml_trigger_on_a_state_is_a_jump_when_it_becomes_true(tmp_path):
    """0028's dose A + 5 at t = 7 written as an SBML event triggered by A < A(7): A = 6/7 + (1/7) e^{-1.4 t} falls
    through that value at t = 7 exactly (A <-> B at k1 = 0.8, k2 = 0.6 from 1 and 1), so the llh and simulations are
    the case's own (model.events' when, located by bisection)."""
    threshold = 6 / 7 + 1 / 7 * math.exp(-1.4 * 7)
    time = "<csymbol encoding='text' definitionURL='http://www.sbml.org/sbml/symbols/time'> time </csymbol>"
    event = _event("<cn> 7 </cn>").replace(f"<apply><geq/>{time}<cn> 7 </cn></apply>",
                                           f"<apply><lt/><ci> A </ci><cn> {threshold!r} </cn></apply>")
    problem = _variant(tmp_path, "0028", "_model.xml", "</listOfReactions>", event)
    (problem.parent / "_experiments.tsv").write_text("experimentId\ttime\tconditionId\nexperiment1\t0.0\t\n")
    solution = yaml.safe_load((SUITE / "v2.0.0" / "0028" / "_0028_solution.yaml").read_text())
    result = evaluate(problem)
    assert result.llh == pytest.approx(solution["llh"], abs=1e-6)
    assert list(result.simulations["simulation"]) == pytest.approx([1.0, 3.0428446239911824], abs=1e-6)


@pytest.mark.parametrize("change, expected", [
    ([("<cn> 7 </cn>", "<ci> k1 </ci>")], "its time k1 depends on k1, which is estimated"),
    ([("<apply><geq/>", "<apply><and/><apply><geq/>"),
      ("</apply></math></trigger>", "</apply><apply><lt/><ci> B </ci><cn> 100 </cn></apply></apply></math></trigger>")],
     "a trigger other than one comparison"),
])
def test_sbml_events_ude_cannot_time_say_so(tmp_path, change, expected):
    event = _event("<cn> 7 </cn>")
    for old, new in change:
        event = event.replace(old, new)
    problem = _variant(tmp_path, "0028", "_model.xml", "</listOfReactions>", event)
    (problem.parent / "_experiments.tsv").write_text("experimentId\ttime\tconditionId\nexperiment1\t0.0\t\n")
    with pytest.raises(ConfigError) as info:
        evaluate(problem)
    assert len(info.value.lines()) == 1 and expected in info.value.lines()[0]


def test_two_sbml_events_that_set_one_state_at_once_name_the_model(tmp_path):
    two = _event("<cn> 7 </cn>").replace("</listOfEvents>", "") + _event(
        "<cn> 7 </cn>", "<cn> 1 </cn>").replace("</listOfReactions>\n    <listOfEvents>", "").replace(
        "id='dose'", "id='wash'")
    problem = _variant(tmp_path, "0028", "_model.xml", "</listOfReactions>", two)
    (problem.parent / "_experiments.tsv").write_text("experimentId\ttime\tconditionId\nexperiment1\t0.0\t\n")
    with pytest.raises(ConfigError) as info:
        evaluate(problem)
    line = info.value.lines()[0]
    assert len(info.value.lines()) == 1 and "_model.xml" in line
    assert "SBML event dose and SBML event wash both set A at time 7 in experiment1" in line


def test_an_sbml_event_that_reads_what_a_period_sets_at_its_time_is_refused(tmp_path):
    """PEtab applies the period's condition first (the test suite's 0030); ude's jumps all read the values before."""
    event = _event("<cn> 7 </cn>").replace("variable='A'", "variable='B'")
    problem = _variant(tmp_path, "0028", "_model.xml", "</listOfReactions>", event)
    with pytest.raises(ConfigError, match="SBML event dose reads A, which the period at time 7"):
        evaluate(problem)


def test_a_later_period_that_resizes_a_compartment_of_reacting_concentrations_is_refused(tmp_path):
    """0028's A and B are concentrations that reactions change in `compartment`: setting its size later would change
    them (amounts kept), even where the size cancels out of the formulas."""
    problem = _variant(tmp_path, "0028", "_conditions.tsv", "condition1\tA\tA + 5.0", "condition1\tcompartment\t2")
    with pytest.raises(ConfigError, match="the size of compartment compartment at time 7, which holds species in "
                                          "concentration units that reactions change"):
        evaluate(problem)
