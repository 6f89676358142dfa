"""The Snakemake pipeline: configs and schema, the DAG of both scales (`snakemake -n`), the commands
its rules run, archived regeneration from a committed fixture (and where its derived files go),
the LaTeX check and the paper rule's failure path, the aggregate step, environment.yml vs
pyproject.toml, notebook parameters and the no-hand-typed-numbers rule of the paper.

The smoke pipeline itself runs end to end in `.ci/run`, not here (too slow to run twice); set
DRAT_PIPELINE_E2E=1 to run it from pytest as well.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None
needs_tomllib = pytest.mark.skipif(tomllib is None, reason="tomllib is Python >= 3.11")

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "archived"
SMOKE = ROOT / "workflow" / "config" / "smoke.yaml"
PAPER = ROOT / "workflow" / "config" / "paper.yaml"
PAPER_V2 = ROOT / "workflow" / "config" / "paper-v2.yaml"

snakemake_exe = shutil.which("snakemake")
needs_snakemake = pytest.mark.skipif(snakemake_exe is None,
                                     reason="snakemake is not installed (pip install -e '.[dev]')")


def snakemake(*args, timeout=300, env=None) -> subprocess.CompletedProcess:
    # --nolock: tests may run while a real pipeline holds the working-directory lock
    return subprocess.run([snakemake_exe, "--nolock", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def job_counts(text: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run."""
    block = text.split("Job stats:")[1].split("\n\n")[0]
    counts = {}
    for line in block.splitlines():
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


# ------------------------------------------------------------------------------------------ configs
def _validate(cfg: dict) -> None:
    from snakemake.utils import validate

    validate(cfg, str(ROOT / "workflow" / "config" / "schema.json"))


@needs_snakemake
@pytest.mark.parametrize("path", [SMOKE, PAPER, PAPER_V2], ids=["smoke", "paper", "paper-v2"])
def test_configs_validate(path):
    cfg = yaml.safe_load(path.read_text())
    _validate(cfg)
    assert cfg["scale"] in ("smoke", "paper")


@needs_snakemake
@pytest.mark.parametrize("change", [
    lambda c: c["sizes"].update(huge=c["sizes"]["tiny"]),          # unknown size
    lambda c: c["sizes"]["tiny"].update(lambdas=[-0.1]),            # negative λ
    lambda c: c["stats"].pop("tost_margin"),                        # the margin must be stated
    lambda c: c.update(devcie="cpu"),                               # typo of a key
    lambda c: c["sizes"]["tiny"].update(baselines=["checkpoint"]),  # unknown baseline
    lambda c: c["sizes"]["tiny"].update(gpus=0),                    # a run needs a process
    lambda c: c["sizes"]["tiny"].update(distributed="zero3"),       # DDP or FSDP2 only
    lambda c: c.update(extra_benches=[{"name": "t", "args": "trace --size tiny"}]),  # not a paper bench
    lambda c: c.update(long_run={"enabled": True}),                 # a long run states its steps
], ids=["size", "lambda", "margin", "typo", "baseline", "gpus", "distributed", "extra", "long"])
def test_schema_rejects_bad_configs(change):
    from snakemake.exceptions import WorkflowError

    cfg = yaml.safe_load(SMOKE.read_text())
    change(cfg)
    with pytest.raises(WorkflowError):
        _validate(cfg)


def test_paper_config_grid():
    cfg = yaml.safe_load(PAPER.read_text())
    assert set(cfg["sizes"]) == {"small", "medium", "large"} and cfg["device"] == "cuda"
    assert cfg["sizes"]["small"]["lambdas"] == [0, 0.01, 0.05, 0.1, 0.5]
    assert cfg["sizes"]["small"]["seeds"] == [0, 1, 2]
    for size in ("medium", "large"):
        assert cfg["sizes"][size]["lambdas"] == [0, 0.05] and cfg["sizes"][size]["seeds"] == [0, 1]
    assert cfg["sizes"]["small"]["budgets_gib"] and cfg["resources"]["gpu"] == 1


@pytest.mark.slow
@needs_snakemake
def test_next_paper_grid_is_what_a_reviewer_asked_for():
    """paper-v2.yaml: its own results folder (nothing of the committed grid counts as done), five
    seeds on small, 3 budgets x 3 seeds, the bench in 3 processes with the compiler's full budget
    sweep and three-arm rows, and the long run of about 100M tokens."""
    cfg = yaml.safe_load(PAPER_V2.read_text())
    assert cfg["results_dir"] == "results/paper-v2"
    assert all(v.startswith("results/paper-v2/") for v in cfg["paper"].values())
    small = cfg["sizes"]["small"]
    assert len(small["seeds"]) >= 5 and len(small["budgets_gib"]) >= 3 and len(small["budget_seeds"]) >= 3
    b = cfg["bench"]
    assert b["processes"] >= 3 and b["rounds"] >= 3 and "offload" in b["arms"]
    assert b["compile_budgets"] == [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    long = cfg["long_run"]
    tokens = long["steps"] * cfg["train"]["batch_size"] * cfg["train"]["seq_len"]
    assert long["enabled"] and tokens >= 100e6 and "none" in long["runs"]
    r = snakemake("-n", "-p", "--forceall", "--configfile", str(PAPER_V2))
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    assert counts["bench_process"] == 3 * len(cfg["sizes"]) and counts["train_long"] == len(long["runs"])
    assert "--arms store,recompute,offload" in r.stdout and "--rounds 3" in r.stdout
    assert "results/paper/" not in r.stdout.replace("results/paper-v2/", "")


# ------------------------------------------------------------------------------------------ DAGs
@needs_snakemake
def test_smoke_dry_run_has_the_whole_chain():
    r = snakemake("-n", "--forceall", "--configfile", str(SMOKE))
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    for rule in ("corpus", "tokenizer", "tokenize", "train", "profile", "aggregate", "stats", "nb_frontier",
                 "nb_training", "nb_tables", "latex", "paper"):
        assert counts.get(rule, 0) >= 1, f"{rule} missing from the smoke DAG: {counts}"
    cfg = yaml.safe_load(SMOKE.read_text())["sizes"]["tiny"]
    n_runs = (len(cfg["baselines"]) + len(cfg["lambdas"])) * len(cfg["seeds"]) \
        + len(cfg["budgets_gib"]) * len(cfg["budget_seeds"])
    assert counts["train"] == n_runs
    assert "gpu=1" not in r.stdout  # CPU scale: no job waits for a GPU


@pytest.mark.slow
@needs_snakemake
def test_paper_dry_run_lists_the_full_grid():
    r = snakemake("-n", "-p", "--forceall", "--configfile", str(PAPER))
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    # small: (none + 5 λ) × 3 seeds + 1 budget × 1 seed; medium, large: (none + 2 λ) × 2 seeds
    assert counts["train"] == 18 + 1 + 6 + 6
    outputs = set(re.findall(r"results/paper/train/\S+/summary\.json", r.stdout))
    for lam in ("0", "0.01", "0.05", "0.1", "0.5"):
        for seed in (0, 1, 2):
            assert f"results/paper/train/small/drat-lam{lam}/seed{seed}/summary.json" in outputs
    for size in ("medium", "large"):
        for run in ("none", "drat-lam0", "drat-lam0.05"):
            assert f"results/paper/train/{size}/{run}/seed1/summary.json" in outputs
        assert f"results/paper/train/{size}/drat-lam0.05/seed2/summary.json" not in outputs
        # baselines are profiled, not trained (recomputation is exact: same loss as none)
        assert f"results/paper/train/{size}/full/seed0/summary.json" not in outputs
    assert "results/paper/train/small/drat-budget3/seed0/summary.json" in outputs
    profiles = set(re.findall(r"results/paper/profile/\S+\.json", r.stdout))
    for size in ("small", "medium", "large"):
        for point in ("none", "full", "selective", "sac", "drat-lam0.05", "oracle-lam0.5"):
            assert f"results/paper/profile/{size}/{point}.json" in profiles
    assert counts["profile"] == 3 * 12 and counts["bench"] == 3
    assert counts["costs"] == 3  # one cost table per size, shared by its drat and oracle points
    blocks = r.stdout.split("\n\n")
    block = next(b for b in blocks if "output: results/paper/profile/large/oracle-lam0.5.json" in b)
    table = "results/paper/costs/large.json"
    assert f"input: {table}" in block and f"--costs {table}" in block
    block = next(b for b in r.stdout.split("\n\n") if "output: results/paper/profile/large/full.json" in b)
    assert "--costs" not in block
    # every train job asks for one GPU at paper scale
    train_blocks = [b for b in r.stdout.split("\n\n") if "rule train:" in b]
    assert train_blocks and all("gpu=1" in b for b in train_blocks)
    # what docs/reproducing.md tells a user `-n -F` lists
    doc = (ROOT / "docs" / "reproducing.md").read_text()
    listed = f"{counts['total']} jobs: {counts['train']} train, {counts['profile']} profile"
    assert f"lists the whole grid, {listed}" in doc


def test_reproducing_doc_names_every_rule_and_how_to_list_every_job():
    doc = (ROOT / "docs" / "reproducing.md").read_text()
    smk = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    rules = set(re.findall(r"^rule (\w+):", smk, re.M))
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert rules - documented == set(), f"not in docs/reproducing.md's DAG table: {rules - documented}"
    assert "snakemake -n -F --configfile workflow/config/paper.yaml" in doc  # -n alone: out-of-date jobs only


@pytest.mark.slow
@needs_snakemake
def test_multi_gpu_size_trains_under_torchrun(tmp_path):
    cfg = yaml.safe_load(PAPER.read_text())
    cfg["sizes"]["large"].update(gpus=4, distributed="fsdp")
    path = tmp_path / "paper_4gpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = snakemake("-n", "--forceall", "-p", "--resources", "gpu=8", "--configfile", str(path))
    assert r.returncode == 0, r.stderr + r.stdout
    assert job_counts(r.stdout)["train"] == 18 + 1 + 6 + 6  # the grid is unchanged
    blocks = [b for b in r.stdout.split("\n\n") if "rule train:" in b]
    large = [b for b in blocks if "size=large" in b]
    assert len(large) == 6
    for b in large:  # prepare the folder, then one process per GPU, asking SLURM for 4 GPUs
        assert "drat train --config-json" in b and "--prepare-only" in b and "gpu=4" in b
        assert "torchrun --standalone --nproc_per_node 4 -m drat.cli train --config" in b
        assert "--distributed fsdp" in b
    others = [b for b in blocks if "size=large" not in b]
    assert all("torchrun" not in b and "gpu=1" in b for b in others)


def test_train_prepares_a_run_for_torchrun(tmp_path, capsys):
    from drat.cli import main
    from drat.train import TrainingConfig

    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "meta.json").write_text("{}")
    fields = {"size": "tiny", "corpus": "stdlib", "steps": 5, "seed": 1, "device": "cpu"}
    out, cfg_file = tmp_path / "run", tmp_path / "logs" / "seed1.config.json"
    (out / "checkpoints").mkdir(parents=True)  # what a failed attempt left behind
    rc = main(["train", "--config-json", json.dumps(fields), "--tokenizer", "tok.json",
               "--tokens", str(tokens), "--out", str(out), "--overwrite", "--prepare-only", str(cfg_file)])
    assert rc == 0 and (out / "tokens" / "meta.json").is_file() and not (out / "checkpoints").exists()
    cfg = TrainingConfig.from_dict(json.loads(cfg_file.read_text()))  # what `drat train --config` reads
    assert cfg.out == str(out) and cfg.tokenizer == "tok.json" and cfg.steps == 5 and cfg.distributed is None
    assert json.loads(capsys.readouterr().out)["config"] == str(cfg_file)


def _fixture_config(tmp_path: Path, allow_missing: bool = True) -> Path:
    results = tmp_path / "results"
    shutil.copytree(FIXTURE / "results", results)
    cfg = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    cfg["results_dir"] = str(results)
    cfg["allow_missing"] = allow_missing
    cfg["paper"] = {"generated_dir": str(tmp_path / "paper" / "generated"),
                    "figures_dir": str(tmp_path / "paper" / "figures"), "build_dir": str(tmp_path / "paper")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
@needs_snakemake
def test_archived_dry_run_needs_no_compute(tmp_path):
    cfg = _fixture_config(tmp_path)
    r = snakemake("-n", "--forceall", "--configfile", str(cfg), "--config", "archived=true")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    for rule in ("corpus", "tokenizer", "tokenize", "train", "profile", "bench"):
        assert rule not in counts, f"archived mode must not run {rule}"
    for rule in ("manifest", "aggregate", "stats", "nb_tables", "latex", "paper"):
        assert counts.get(rule) == 1


@pytest.mark.slow
@needs_snakemake
def test_archived_stats_from_the_fixture_name_the_missing_runs(tmp_path):
    cfg = _fixture_config(tmp_path)
    r = snakemake("--cores", "1", "--configfile", str(cfg), "--config", "archived=true", "--", "stats")
    assert r.returncode == 0, r.stderr + r.stdout
    results = tmp_path / "results"
    missing = json.loads((results / "tables" / "missing.json").read_text())
    assert missing["n_runs"] == 6 and missing["expected_runs"] == 9
    assert sorted(missing["missing"]["runs"]) == sorted(
        f"{results}/train/tiny/{run}/seed2 (no config.json)"
        for run in ("none", "drat-lam0.05", "drat-lam0.5"))
    log = (results / "logs" / "aggregate.log").read_text()
    assert "WARNING: 3 expected result(s) missing" in log and f"{results}/train/tiny/none/seed2" in log
    paired = (results / "stats" / "paired.csv").read_text()
    assert "drat-lam0.05" in paired
    # nothing was trained or profiled: the archived inputs are untouched
    assert not (results / "data").exists()
    # another run is committed: the archived build sees it (the results digest is a param)
    again = ("-n", "--configfile", str(cfg), "--config", "archived=true", "--", "stats")
    assert "Nothing to be done" in snakemake(*again).stdout
    runs = results / "train" / "tiny" / "none"
    shutil.copytree(runs / "seed1", runs / "seed2")
    assert job_counts(snakemake(*again).stdout).get("aggregate") == 1


@pytest.mark.slow
@needs_snakemake
def test_archived_fails_on_missing_runs_unless_allowed(tmp_path):
    cfg = _fixture_config(tmp_path, allow_missing=False)
    r = snakemake("--cores", "1", "--configfile", str(cfg), "--config", "archived=true", "--", "stats")
    assert r.returncode != 0
    log = (tmp_path / "results" / "logs" / "aggregate.log").read_text()
    assert "train/tiny/drat-lam0.5/seed2 (no config.json)" in log


def _have_paper_tools() -> bool:
    try:
        import jupytext  # noqa: F401
        import papermill  # noqa: F401
    except ImportError:
        return False
    return shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None


@pytest.mark.slow
@needs_snakemake
@pytest.mark.skipif(not _have_paper_tools(), reason="needs the pipeline extra and latexmk (see .ci/run)")
def test_archived_regenerates_figures_tables_and_pdf(tmp_path):
    cfg = _fixture_config(tmp_path)
    r = snakemake("--cores", "2", "--configfile", str(cfg), "--config", "archived=true", timeout=600)
    assert r.returncode == 0, r.stderr[-5000:] + r.stdout[-3000:]
    paper = tmp_path / "paper"
    assert (paper / "drat.pdf").stat().st_size > 10_000
    for fig in ("frontier", "lambda_sweep", "gate_heatmap", "loss_curves", "budget_tracking", "bench"):
        side = json.loads((paper / "figures" / f"{fig}.json").read_text())
        assert side["data_provenance"]["torch_version"] and side["render_provenance"]["git_commit"]
        assert (paper / "figures" / f"{fig}.pdf").is_file() and (paper / "figures" / f"{fig}.png").is_file()
    macros = (paper / "generated" / "macros.tex").read_text()
    assert r"\newcommand{\NumMissing}{3}" in macros and r"\newcommand{\HeadTostVerdict}" in macros
    assert (tmp_path / "results" / "notebooks" / "tables.html").is_file()

    # an input changes and LaTeX fails: the good PDF stays where it was, and the next run builds
    # the paper again rather than taking the old PDF for current
    pdf, good = paper / "drat.pdf", (paper / "drat.pdf").read_bytes()
    mtime = pdf.stat().st_mtime
    with open(paper / "generated" / "setup_table.tex", "a") as f:
        f.write("% changed\n")
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "latexmk").write_text("#!/bin/sh\necho 'latexmk: broken on purpose' >&2\nexit 1\n")
    (fake / "latexmk").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    again = ("--configfile", str(cfg), "--config", "archived=true")
    r = snakemake("--cores", "1", *again, env=env)
    assert r.returncode != 0 and "latex: latexmk failed; see" in r.stderr and "is kept" in r.stderr
    assert pdf.read_bytes() == good and pdf.stat().st_mtime == mtime
    assert job_counts(snakemake("-n", *again).stdout) == {"latex": 1, "paper": 1, "all": 1, "total": 3}


@pytest.mark.slow
@needs_snakemake
def test_missing_latex_is_refused_in_one_line_before_any_job(tmp_path):
    """Without latexmk/pdflatex a run that would build the PDF stops at once (exit 2, the apt
    packages named, nothing written); a run that builds no PDF does not need them."""
    cfg = _fixture_config(tmp_path)
    bare = tmp_path / "bin"  # a PATH with a shell and Python, and no TeX
    bare.mkdir()
    for tool in ("bash", "sh"):
        (bare / tool).symlink_to(shutil.which(tool))
    (bare / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bare)}
    cmd = [sys.executable, "-m", "snakemake", "--nolock", "--cores", "1", "--configfile", str(cfg),
           "--config", "archived=true"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-3000:]
    assert "latexmk, pdflatex" in errors[0] and "texlive-latex-extra" in errors[0]
    assert "--omit-from latex" in errors[0]
    results = tmp_path / "results"
    assert not (results / "manifest.json").exists() and not (results / "tables").exists()
    r = subprocess.run([*cmd, "--", "manifest"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (results / "manifest.json").is_file()


@pytest.mark.skipif(os.environ.get("DRAT_PIPELINE_E2E") != "1",
                    reason="the smoke pipeline runs end to end in .ci/run; DRAT_PIPELINE_E2E=1 runs it here")
def test_smoke_pipeline_end_to_end():
    r = snakemake("--cores", "all", "--configfile", str(SMOKE), timeout=1800)
    assert r.returncode == 0, r.stderr[-5000:]
    assert (ROOT / "results" / "smoke" / "paper" / "drat.pdf").is_file()


# ------------------------------------------------------------------------------------------ aggregate
def test_aggregate_lists_missing_runs_and_reads_present_ones(tmp_path):
    from drat.analysis.aggregate import AggregateError, aggregate

    res = FIXTURE / "results"
    runs = [{"size": "tiny", "run": r, "strategy": s, "lam": lam, "budget_gib": None, "seed": seed,
             "dir": str(res / "train" / "tiny" / r / f"seed{seed}")}
            for r, s, lam in [("none", "none", None), ("drat-lam0.05", "drat", 0.05)] for seed in (0, 1, 7)]
    manifest = {"scale": "t", "results_dir": str(res), "runs": runs,
                "profiles": [{"size": "tiny", "point": "none", "kind": "baseline", "strategy": "none",
                              "lam": None, "budget_gib": None,
                              "path": str(res / "profile" / "tiny" / "none.json")}]}
    with pytest.raises(AggregateError, match=r"2 expected result\(s\)[\s\S]*none/seed7 \(no config.json\)"):
        aggregate(manifest, tmp_path / "strict")
    warnings = []
    out = aggregate(manifest, tmp_path / "t", allow_missing=True, log=warnings.append)
    assert out["n_runs"] == 4 and out["n_missing"] == 2 and "drat-lam0.05/seed7" in warnings[0]
    import csv

    rows = list(csv.DictReader(open(tmp_path / "t" / "runs.csv")))
    assert {r["run"] for r in rows} == {"none", "drat-lam0.05"}
    assert all(float(r["final_val_loss"]) > 0 and float(r["saved_activation_bytes"]) > 0 for r in rows)
    gates = list(csv.DictReader(open(tmp_path / "t" / "gates.csv")))
    assert gates and {g["layer"] for g in gates} >= {"0", "1", "model"}
    with pytest.raises(AggregateError, match="no results at all"):
        aggregate({"runs": [{**runs[0], "dir": str(tmp_path / "nowhere")}]}, tmp_path / "none",
                  allow_missing=True)
    # a profile or bench that a job script saw cut off mid-way (`.incomplete`) counts as missing
    prof = tmp_path / "none.json"
    shutil.copy(res / "profile" / "tiny" / "none.json", prof)
    (tmp_path / "none.json.incomplete").touch()
    cut = {**manifest, "profiles": [{**manifest["profiles"][0], "path": str(prof)}]}
    out = aggregate(cut, tmp_path / "cut", allow_missing=True, log=warnings.append)
    assert f"{prof} (cut off)" in out["missing"]["profiles"]


# ------------------------------------------------------------------------------------------ rules
# what a job may run: the `drat` command or a `python -m drat.…` module (the PDF rules: latexmk, mv)
ALLOWED_COMMAND = re.compile(r"^\(?(?:OMP_NUM_THREADS=\d+ )?(?:drat |python -m drat\.)")


@pytest.mark.slow
@needs_snakemake
def test_rules_run_only_the_drat_command_or_drat_modules():
    r = snakemake("-n", "-p", "--forceall", "--configfile", str(SMOKE))
    assert r.returncode == 0, r.stderr + r.stdout
    commands = {}
    for block in r.stdout.split("\n\n"):
        rule = re.search(r"^(?:localrule|rule) (\w+):", block, re.M)
        cmd = re.search(r"^Shell command: (.+)$", block, re.M)
        if rule and cmd:
            commands.setdefault(rule.group(1), cmd.group(1))
    assert {"corpus", "tokenize", "costs", "profile", "manifest", "kernel", "nb_tables", "latex",
            "paper"} <= set(commands)
    assert commands.pop("all") == "None"  # the target rule runs nothing
    for rule, cmd in commands.items():
        if rule not in ("latex", "paper"):
            assert ALLOWED_COMMAND.match(cmd), f"rule {rule} runs {cmd[:80]!r}: use `drat` or python -m drat"
    assert "latexmk" in commands["latex"] and commands["paper"].startswith("cp ")
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        assert "workflow/scripts" not in path.read_text(), f"{path.name} runs a script outside the package"


@pytest.mark.slow
@needs_snakemake
def test_wildcards_take_exactly_the_names_of_drat_runs():
    """A profile or train target is matched by the grammar of drat.runs, and nothing else."""
    prof, train = "results/smoke/profile/tiny", "results/smoke/train/tiny"
    for target in (f"{prof}/oracle-lam0.3.json", f"{prof}/drat-budget1e-05.json",
                   f"{train}/drat-lam0.2/seed5/summary.json"):
        r = snakemake("-n", target, "--configfile", str(SMOKE))
        assert r.returncode == 0, f"{target}: {r.stderr[-2000:]}"
    for target in (f"{prof}/oracle-0.3.json", f"{prof}/drat-lam.5.json"):
        r = snakemake("-n", target, "--configfile", str(SMOKE))
        assert r.returncode != 0 and "MissingRuleException" in r.stderr + r.stdout, target
    r = snakemake("-n", f"{train}/oracle-lam0.5/seed0/summary.json", "--configfile", str(SMOKE))
    assert r.returncode != 0 and "the oracle is a plan to profile, not a training run" in r.stderr + r.stdout


@pytest.mark.slow
@needs_snakemake
def test_the_config_in_use_is_named():
    r = snakemake("-n", "--", "stats")  # no --configfile: the smoke scale, said so
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("config: workflow/config/smoke.yaml (no --configfile given;")
    assert "--configfile workflow/config/paper.yaml" in first
    r = snakemake("-n", "--configfile", str(PAPER), "--", "stats")
    assert r.stderr.splitlines()[0].startswith("config: workflow/config/paper.yaml; scale 'paper'")


def test_rule_files_have_docstrings_and_heavy_rules_log_and_benchmark():
    rules = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
    assert rules
    for path in rules:
        text = path.read_text()
        assert text.startswith('"""'), f"{path.name} needs a header docstring"
    text = "\n".join(p.read_text() for p in rules)
    for rule in ("corpus", "tokenizer", "tokenize", "train", "profile", "bench", "aggregate", "stats",
                 "nb_frontier", "nb_training", "nb_tables", "latex"):
        body = text.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert "log:" in body and "benchmark:" in body, f"rule {rule} needs log: and benchmark:"
    for rule in ("train", "profile", "bench"):
        assert "gpu=" in text.split(f"rule {rule}:")[1].split("\nrule ")[0]


# ------------------------------------------------------------------------------------------ notebooks, paper
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.py"))


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebooks_are_percent_scripts_with_a_parameters_cell(nb):
    text = (ROOT / "notebooks" / nb).read_text()
    assert "format_name: percent" in text
    assert re.search(r'^# %% tags=\["parameters"\]$', text, re.M), f"{nb} has no cell tagged parameters"


def test_paper_text_quotes_no_hand_typed_numbers():
    """Results in the text are macros: no decimals or percentages typed into paper/*.tex."""
    for path in sorted((ROOT / "paper").rglob("*.tex")):
        if "generated" in path.parts:
            continue
        text = re.sub(r"(?<!\\)%.*", "", path.read_text())  # comments
        text = re.sub(r"\\begin\{verbatim\}[\s\S]*?\\end\{verbatim\}", "", text)
        text = re.sub(r"\\(includegraphics|usepackage|documentclass)(\[[^\]]*\])?", "", text)
        bad = re.findall(r"\d+\.\d+|\d+\s*\\%", text)
        assert not bad, f"{path.relative_to(ROOT)} types numbers by hand: {bad}; use a macro from macros.tex"


def test_paper_uses_only_macros_the_tables_notebook_defines():
    defined = set(re.findall(r'M\.add\("([A-Za-z]+)"', (ROOT / "notebooks" / "tables.py").read_text()))
    latex_builtin = set()
    used = set()
    for path in (ROOT / "paper").rglob("*.tex"):
        if "generated" in path.parts:
            continue
        used |= {m for m in re.findall(r"\\([A-Z][A-Za-z]+)", path.read_text())}
    latex_builtin |= {"bibliographystyle", "bibliography"}
    assert used - defined - latex_builtin == set()


# ------------------------------------------------------------------------------------------ environment
def _name(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(.*)", req)
    return m.group(1).lower(), m.group(2).replace(" ", "")


@needs_tomllib
def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = dict(_name(r) for r in py["dependencies"])
    for extra in ("dev", "pipeline"):
        for r in py["optional-dependencies"][extra]:
            n, spec = _name(r)
            if n not in want or (spec and not want[n]):
                want[n] = spec
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {"pytorch": "torch"}  # conda package names that differ from PyPI's
    have = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            n, spec = _name(dep)
            have[conda.get(n, n)] = spec
    have.pop("python", None)
    have.pop("pip", None)
    assert set(have) == set(want), f"only in environment.yml: {set(have) - set(want)}; only in pyproject: " \
                                   f"{set(want) - set(have)}"
    for n, spec in want.items():
        assert have[n] == spec, f"{n}: environment.yml says {have[n]!r}, pyproject.toml {spec!r}"
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "-e ." in pip


@needs_tomllib
def test_environment_yml_python_matches_requires_python():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python{py['requires-python']}" in env["dependencies"]


def _smk_list(name: str) -> list[str]:
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    return ast.literal_eval(re.search(rf"^{name} = (\[[^\]]*\])", text, re.M).group(1))


def test_ci_runs_the_readme_test_command_and_the_smoke_pipeline():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "workflow/config/smoke.yaml" in ci and "latexmk" in ci
    assert "python -m pytest -q" in (ROOT / "README.md").read_text()
    # CI checks every figure and table the pipeline makes, and that it left git status alone
    figures = re.search(r"figures/\{([^}]*)\}", ci).group(1).split(",")
    tables = re.search(r"generated/\{([^}]*)\}", ci).group(1).split(",")
    assert sorted(figures) == sorted(_smk_list("FIGURES"))
    assert sorted(tables) == sorted(_smk_list("TABLES") + ["macros"])
    assert 'status_before" != "$status_after' in ci


def test_derived_paper_files_live_under_results_and_are_ignored():
    """paper/ holds LaTeX sources only; figures, generated tables and the PDF of every scale land
    under its results_dir, which git ignores, so a build (archived included) leaves git status clean."""
    from drat.provenance import OUTPUT_PATHS

    tracked = subprocess.run(["git", "ls-files", "paper"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert tracked and all(p.endswith((".tex", ".bib")) for p in tracked), tracked
    written = ["tables/runs.csv", "stats/stats.json", "notebooks/tables.html", "logs/paper.log",
               "benchmarks/paper.tsv", "manifest.json", "paper/drat.pdf", "paper/latex/drat.aux"]
    for path in (SMOKE, PAPER):
        cfg = yaml.safe_load(path.read_text())
        res = cfg["results_dir"]
        dirs = [cfg["paper"][k] for k in ("generated_dir", "figures_dir", "build_dir")]
        assert all(d.startswith(f"{res}/paper") for d in dirs), dirs
        probes = [f"{res}/{w}" for w in written] + [f"{d}/x.tex" for d in dirs]
        r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT,
                           input="\n".join(probes), capture_output=True, text=True)
        assert sorted(r.stdout.split()) == sorted(probes), set(probes) - set(r.stdout.split())
    assert OUTPUT_PATHS == ("results",)  # what the dirty-tree check leaves out: pipeline outputs only


def test_aggregate_reads_exactness_and_compares_a_repeated_run(tmp_path):
    """exactness.csv carries the bench rows per mode; repeats.csv compares a run with its repeat
    record by record (first differing logged loss, final gap); a missing half is listed."""
    import csv

    from drat.analysis.aggregate import aggregate

    orig = FIXTURE / "results" / "train" / "tiny" / "none" / "seed0"
    rep = tmp_path / "repeat" / "tiny" / "none" / "seed0"
    shutil.copytree(orig, rep)
    lines = (rep / "metrics.jsonl").read_text().splitlines()
    train_at = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == "train"]
    changed = json.loads(lines[train_at[1]])
    changed["loss"] += 1e-3  # the second logged step drifts
    lines[train_at[1]] = json.dumps(changed)
    (rep / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = json.loads((rep / "summary.json").read_text())
    summary["final_val_loss"] += 0.25
    (rep / "summary.json").write_text(json.dumps(summary))
    bench = tmp_path / "exactness.json"
    rows = [{"name": "none", "n_recomputed": 0, "loss": 1.0, "loss_equal": True, "grads_equal": True,
             "n_params_differing": 0, "max_abs_grad_diff": 0.0, "rebuilds": 0},
            {"name": "full", "n_recomputed": None, "loss": 1.0, "loss_equal": True, "grads_equal": False,
             "n_params_differing": 3, "max_abs_grad_diff": 3e-5, "rebuilds": 0}]
    bench.write_text(json.dumps({"meta": {"device": "GPU-X", "deterministic": False, "git_commit": "c" * 40},
                                 "rows": rows}))
    manifest = {"runs": [], "exactness": [
        {"size": "tiny", "mode": "plain", "path": str(bench)},
        {"size": "tiny", "mode": "deterministic", "path": str(tmp_path / "nowhere.json")}],
        "repeats": [{"size": "tiny", "run": "none", "seed": 0, "dir": str(rep), "of": str(orig)},
                    {"size": "tiny", "run": "none", "seed": 1, "dir": str(tmp_path / "absent"),
                     "of": str(orig)}]}
    out = aggregate(manifest, tmp_path / "t", allow_missing=True, log=lambda m: None)
    assert out["missing"]["exactness"] == [str(tmp_path / "nowhere.json")]
    assert out["missing"]["repeats"] == [f"{tmp_path / 'absent'} (no config.json)"]
    ex = list(csv.DictReader(open(tmp_path / "t" / "exactness.csv")))
    assert [(r["mode"], r["name"], r["grads_equal"], r["device"]) for r in ex] == [
        ("plain", "none", "True", "GPU-X"), ("plain", "full", "False", "GPU-X")]
    (r,) = list(csv.DictReader(open(tmp_path / "t" / "repeats.csv")))
    step = json.loads(lines[train_at[1]])["step"]
    assert int(r["first_differing_step"]) == step and r["initial_val_loss_equal"] == "True"
    assert float(r["abs_gap"]) == pytest.approx(0.25)
    # the figures' footers name every device and commit the tables hold, not only the runs'
    prov = json.loads((tmp_path / "t" / "provenance.json").read_text())
    assert "GPU-X" in prov["device"] and "c" * 40 in prov["git_commit"]


def test_oracle_curve_script_places_the_predicted_frontier_in_the_profiles_units(tmp_path):
    """From a size's cost table and its profiled `none`: CPU units (saved bytes, base 0), floor to
    store-all, time never rising with memory, the store-all end at `none`'s step time."""
    import csv

    from drat.measure import build_costs

    from ..conftest import make_batch, make_model

    model = make_model()
    idx, targets = make_batch()
    costs = build_costs(model, idx, targets, "activation_size")
    (tmp_path / "tiny.json").write_text(json.dumps({"size": "tiny", "costs": costs.to_dict()}))
    with open(tmp_path / "profile.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["size", "point", "peak_memory_bytes", "step_ms"])
        w.writeheader()
        w.writerow({"size": "tiny", "point": "none", "peak_memory_bytes": "", "step_ms": 10.0})
        w.writerow({"size": "other", "point": "none", "peak_memory_bytes": "", "step_ms": 99.0})
    import drat.analysis.curve as mod

    out = tmp_path / "curve.csv"
    assert mod.main(["--costs", str(tmp_path / "tiny.json"), "--profile", str(tmp_path / "profile.csv"),
                     "--points", "5", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 5 and {r["memory_metric"] for r in rows} == {"saved_activation_bytes"}
    mem = [float(r["memory_bytes"]) for r in rows]
    t = [float(r["step_ms"]) for r in rows]
    assert mem == sorted(mem) and mem[-1] == pytest.approx(costs.total_bytes)
    assert all(a >= b - 1e-9 for a, b in zip(t, t[1:])) and t[-1] == pytest.approx(10.0)
    # no costs at all (an archived build before any were committed): a header-only table
    assert mod.main(["--profile", str(tmp_path / "profile.csv"), "--out", str(out)]) == 0
    assert list(csv.DictReader(open(out))) == []
    # costs taken at another shape than the profiled `none`: the curve would be misplaced
    (tmp_path / "tiny.json").write_text(json.dumps({"size": "tiny", "batch_size": 2, "seq_len": 64,
                                                    "costs": costs.to_dict()}))
    with open(tmp_path / "profile.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["size", "point", "peak_memory_bytes", "step_ms", "batch_size",
                                          "seq_len"])
        w.writeheader()
        w.writerow({"size": "tiny", "point": "none", "peak_memory_bytes": "", "step_ms": 10.0,
                    "batch_size": 4, "seq_len": 64})
    with pytest.raises(SystemExit, match="measured at batch 2, seq 64.*batch 4, seq 64"):
        mod.main(["--costs", str(tmp_path / "tiny.json"), "--profile", str(tmp_path / "profile.csv"),
                  "--out", str(out)])
