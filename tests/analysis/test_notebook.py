"""`python -m drat.analysis.notebook` and `python -m drat.analysis.manifest`: the pipeline's notebook
and manifest steps (their refusals; the smoke pipeline executes the notebooks themselves)."""

from __future__ import annotations

import json

import pytest

from drat.analysis import manifest, notebook


@pytest.mark.parametrize("write, params, message", [
    ("# %% [markdown]\n# no parameters cell\n", "{}", "has no cell tagged `parameters`"),
    ('# %% tags=["parameters"]\nx = 1\n', "[1, 2]", "--params-json must be a JSON object"),
    ('# %% tags=["parameters"]\nx = 1\n', "{oops", "Expecting property name"),
    (None, "{}", "no notebook"),
])
def test_notebook_refuses_in_one_line_and_writes_nothing(tmp_path, capsys, write, params, message):
    src = tmp_path / "nb.py"
    if write is not None:
        header = ("# ---\n# jupyter:\n#   jupytext:\n#     formats: py:percent\n"
                  "#     text_representation:\n#       format_name: percent\n# ---\n\n")
        src.write_text(header + write)
    out = tmp_path / "out"
    rc = notebook.main(["run", str(src), "--ipynb", str(out / "nb.ipynb"), "--html", str(out / "nb.html"),
                        "--params-json", params])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err and not out.exists()


def test_manifest_is_written_indented_and_refuses_non_objects(tmp_path, capsys):
    grid = {"scale": "t", "runs": [{"size": "tiny", "run": "none", "seed": 0}], "profiles": []}
    out = tmp_path / "sub" / "manifest.json"
    assert manifest.main(["--json", json.dumps(grid), "--out", str(out)]) == 0
    assert out.read_text() == json.dumps(grid, indent=1) + "\n" and not list(out.parent.glob("*.tmp"))
    for bad in ("[1]", "{"):
        assert manifest.main(["--json", bad, "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists() and capsys.readouterr().err.count("\n") == 2
