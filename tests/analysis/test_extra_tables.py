"""The paper's tables of the extra benches: the docs' rows, set in LaTeX (CPU, no timing)."""

import json

import pytest

from drat.analysis.extra_tables import COLUMNS, bench_table, extra_section, md_to_tex


def test_md_to_tex_sets_code_escapes_and_maps_symbols():
    assert md_to_tex("`drat3-b8`") == r"\texttt{drat3-b8}"
    assert md_to_tex("**3.4×** `none`'s batch, −9.4%") == r"3.4$\times$ \texttt{none}'s batch, $-$9.4\%"
    assert md_to_tex("B=8 ✗") == r"B=8 $^{\ast}$"
    assert md_to_tex("a_b & c") == r"a\_b \& c"


@pytest.mark.parametrize("kind", sorted(COLUMNS))
def test_bench_table_takes_the_papers_columns_of_the_docs_rows(kind):
    from drat.analysis.extra_tables import _HEADERS

    header = _HEADERS[kind]
    row = [f"`{h}`" if i == 0 else f"v{i}" for i, h in enumerate(header)]
    tex = bench_table(kind, [row])
    lines = tex.splitlines()
    head = lines[lines.index(r"\toprule") + 1]
    assert head.count("&") == len(COLUMNS[kind]) - 1
    body = lines[lines.index(r"\midrule") + 1]
    want = [md_to_tex(row[header.index(c)]) for c in COLUMNS[kind]]
    assert body == " & ".join(want) + r" \\"


def test_extra_section_reads_a_capacity_file(tmp_path):
    """A capacity result as the paper shows it: the model, the cap, the docs' headline, the rows."""
    cfg = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 512, "tie_weights": True}
    rows = [{"name": "none", "batch_size": 3, "search": "largest", "fits": True, "peak_gib": 0.004,
             "step_ms": 10.0, "tokens_per_s": 19200.0, "mfu": None, "probes": []},
            {"name": "drat", "batch_size": 12, "search": "largest", "fits": True, "peak_gib": 0.0049,
             "step_ms": 30.0, "tokens_per_s": 25600.0, "mfu": None, "probes": [], "n_recomputed": 4,
             "recomputed_sites": "mlp_act"}]
    d = tmp_path / "extra" / "cap"
    d.mkdir(parents=True)
    meta = {"config": cfg, "seq_len": 64, "cap_gib": 0.005, "device": "cpu (x86_64)", "params": 200000}
    (d / "capacity.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    entry = {"name": "cap", "title": "Under a cap", "path": str(d / "capacity.json")}
    tex = extra_section(entry, root=tmp_path)
    assert r"\paragraph{Under a cap.}" in tex and "under a 0.005 GiB cap" in tex
    assert r"\texttt{drat} fits 4.0$\times$ \texttt{none}'s batch (B=12 against 3)" in tex
    assert r"\label{tab:extra-cap}" in tex and r"\texttt{drat} & 12 &" in tex
