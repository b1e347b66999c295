"""CSV data: missing cells, experiments, unobserved states, validation windows, and precise errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ude_cli.errors import DataError, UdeError

from .helpers import model, problem


def raw(file="d.csv", **data):
    return {"data": {"file": file, "columns": {"x": "x", "y": "y"}, **data},
            "model": {"states": ["x", "y"], "equations": {"x": "-a*x", "y": "a*x - b*y"},
                      "parameters": {"a": 0.5, "b": 0.3}}}


def test_empty_cells_are_masked_not_zero(write, tmp_path):
    write("d.csv", """
        t,x,y
        0,1.0,0.0
        0.5,,0.2
        1.3,0.5,
        2.0,0.37,0.4
        """)
    p = problem(raw(), tmp_path)
    e = p.dataset.experiments[0]
    assert np.isnan(e.values[1, 0]) and np.isnan(e.values[2, 1])
    m = model(raw(), tmp_path)
    g = m.groups[0]
    assert g.train.sum() == 6  # 8 cells, 2 missing
    from ude_cli.config import LossSpec
    from ude_cli.likelihood.objective import Objective

    obj = Objective(m, LossSpec())
    with torch.no_grad():
        sol = m()
        loss = float(obj.loss(sol)[0])
        pred = sol[0][:, 0, 0, :].numpy()
    obs = np.array([[1.0, 0.0], [np.nan, 0.2], [0.5, np.nan], [0.37, 0.4]])
    ok = np.isfinite(obs)
    assert loss == pytest.approx(np.mean((pred[ok] - obs[ok]) ** 2), rel=1e-12)


def test_long_format_experiments_share_parameters_with_own_initial_states(write, tmp_path):
    write("d.csv", """
        run,t,x,y
        a,0,1.0,0.0
        a,1,0.6,0.2
        a,2,0.37,0.3
        b,0,2.0,1.0
        b,0.7,1.4,1.0
        b,3.1,0.4,0.7
        """)
    m = model(raw(experiment="run"), tmp_path)
    ds = m.problem.dataset
    assert [e.name for e in ds.experiments] == ["a", "b"]
    assert [list(e.t) for e in ds.experiments] == [[0, 1, 2], [0, 0.7, 3.1]]
    assert len(m.groups) == 1 and list(m.groups[0].times) == [0, 0.7, 1, 2, 3.1]
    with torch.no_grad():
        y0 = m.initial()
    assert y0.shape == (1, 2, 2)
    assert y0[0, 1].tolist() == [2.0, 1.0]


def test_several_files_are_several_experiments(write, tmp_path):
    write("one.csv", "t,x,y\n0,1,0\n1,0.6,0.2\n")
    write("two.csv", "t,x,y\n5,2,1\n6,1.2,1.1\n7,0.8,1.0\n")
    r = raw()
    r["data"].pop("file")
    r["data"]["files"] = ["one.csv", "two.csv"]
    m = model(r, tmp_path)
    assert [e.name for e in m.problem.dataset.experiments] == ["one", "two"]
    assert [g.t0 for g in m.groups] == [0, 5]  # different start times: solved as two groups


def test_validation_window(write, tmp_path):
    write("d.csv", "t,x,y\n" + "\n".join(f"{t},{np.exp(-t)},{t}" for t in range(10)) + "\n")
    p = problem(raw(validation={"last_fraction": 0.2}), tmp_path)
    assert p.dataset.experiments[0].train.tolist() == [True] * 8 + [False] * 2
    p = problem(raw(validation={"after": 6.5}), tmp_path)
    assert p.dataset.experiments[0].train.tolist() == [True] * 7 + [False] * 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t,x,y\n0,1,2\n0,2,3\n", "d.csv: lines 2 and 3: duplicate time 0; times must be strictly increasing"),
        ("t,x,y\n0,1,2\n2,2,3\n1,1,1\n", "d.csv: line 4: time decreases from 2 to 1; sort the rows by time"),
        ("t,x,y\n0,1,2\n1,abc,3\n", "d.csv: line 3, column 'x': expected a number, got 'abc'"),
        ("t,x,y\n0,1,2\n1,2,5\n2,\"1,5\",3\n", "d.csv: line 4, column 'x': expected a number, got '1,5'; use '.' "
                                               "as the decimal point"),
        ("t,x,y\n0,1,2\n1,inf,3\n", "d.csv: line 3, column 'x': infinite value 'inf'; leave the cell empty if it "
                                    "was not observed"),
        ("t;x;y\n0;1;2\n1;2;3\n", "d.csv: line 1: only one column found with delimiter ',', but the file looks "
                                  "';'-separated; set data.delimiter to ';'"),
        ("t,x,y\n0,1,2\n1,2,3,4\n", "d.csv: line 3: 4 fields, but the header has 3; every row needs one field per "
                                    "column (leave a cell empty for a missing value)"),
        ("", "d.csv: the file is empty; expected a header row and data rows"),
        ("t,x,y\n", "d.csv: the file has a header but no data rows"),
        ("t,x,y\n0,1,2\n", "d.csv: experiment '1' has 1 time point; at least 2 are needed to fit (one when model.t0 is given)"),
        ("t,x,z\n0,1,2\n1,2,3\n", "d.csv: no column 'y' (named by data.columns.y); the header has: t, x, z"),
        ("t,x,y\n,1,2\n1,2,3\n", "d.csv: line 2, column 't': empty, but every row needs a value here"),
    ],
)
def test_bad_csv_is_one_precise_line(write, tmp_path, text, message):
    write("d.csv", text)
    with pytest.raises(UdeError) as info:
        problem(raw(), tmp_path)
    assert info.value.lines() == [f"{tmp_path}/{message}"]


def test_not_utf8(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"t,x,y\n0,1,2\n1,\xe9,3\n")
    with pytest.raises(DataError) as info:
        problem(raw(), tmp_path)
    assert str(info.value) == f"{tmp_path}/d.csv: line 3: not UTF-8 text (byte 14); save the file as UTF-8"


def test_missing_file_is_named_as_given_relative_to_the_config(tmp_path):
    (tmp_path / "cfg").mkdir()
    with pytest.raises(DataError) as info:
        problem(raw(file="../data/nothere.csv"), tmp_path / "cfg")
    assert str(info.value) == (f"{tmp_path}/cfg/config.yaml: data.file: data file '{tmp_path}/data/nothere.csv' not "
                               f"found: the folder '{tmp_path}/data' does not exist; paths are relative to the config "
                               f"file's folder")


def test_decimal_commas_are_read_with_data_decimal(tmp_path):
    (tmp_path / "d.csv").write_text("t;x;y\n0;1,25;0\n0,5;;0,2\n1,5;-0,5;3\n")
    p = problem(raw(delimiter=";", decimal=","), tmp_path)
    e = p.dataset.experiments[0]
    np.testing.assert_array_equal(e.t, [0.0, 0.5, 1.5])
    np.testing.assert_array_equal(e.values[[0, 2]], [[1.25, 0.0], [-0.5, 3.0]])
    assert np.isnan(e.values[1, 0]) and e.values[1, 1] == 0.2


def test_a_decimal_point_in_a_decimal_comma_file_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("t;x;y\n0;1,25;0\n1;1.5;0,2\n")
    with pytest.raises(DataError) as info:
        problem(raw(delimiter=";", decimal=","), tmp_path)
    assert str(info.value) == (f"{tmp_path}/d.csv: line 3, column 'x': expected a number with a decimal comma "
                               f"(data.decimal is ','), got '1.5'")


def test_decimal_comma_needs_another_delimiter(tmp_path):
    (tmp_path / "d.csv").write_text("t,x,y\n0,1,0\n1,2,3\n")
    with pytest.raises(UdeError, match=r"data: decimal ',' needs another delimiter: set delimiter: ';'"):
        problem(raw(decimal=","), tmp_path)


@pytest.mark.parametrize(("csv", "columns", "message"), [
    ("t,a,b\n0,1,\n1,2,\n2,3,\n", "{x: a, y: b}",
     "column 'b' (named by data.columns.y) has no value in any row: map only columns with data"),
    ("t,a,b\n0,1,5\n1,2,6\n2,3,7\n", "{x: a, y: a}", "column 'a' is mapped to the states x and y (data.columns)"),
])
def test_a_column_without_values_or_mapped_twice_is_refused_in_one_line(tmp_path, csv, columns, message):
    """A new user's empty predator column made 'ude check' say ok and the fit fail with a misleading 'loss not
    finite' (with a noise model) or fit silently unobserved (without); one column on two states fitted both to
    the same numbers."""
    (tmp_path / "d.csv").write_text(csv)
    raw = f"""
data: {{file: d.csv, time: t, columns: {columns}}}
model:
  states: [x, y]
  parameters: {{k: 0.5}}
  equations: {{x: -k*x, y: k*x}}
  initial: {{x: 1.0, y: 0.0}}
"""
    with pytest.raises(DataError) as info:
        problem(raw, tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
