"""Config loading and validation, and the grid of runs every other rule file draws from.

Without --configfile the smoke config is used (and said so on stderr). The config is validated
against workflow/config/schema.json (snakemake.utils.validate, defaults filled in). Run and point
names follow the grammar of drat.runs, built with `run_name` and read with `parse_run_name`:

    run    none | full | selective | sac | drat-lam<λ> | drat-budget<GiB>    (a training run)
    point  the same names, plus oracle-lam<λ> | oracle-budget<GiB>            (a profiled plan)

Numbers in names are written with Python's `g` format: 0.05 -> 0.05, 6.0 -> 6.
"""

import json
import os
import re
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from drat.model import SHAPE_FLAGS
from drat.runs import NAME_RE, fmt_number, parse_run_name, run_name

DEFAULT_CONFIG = "workflow/config/smoke.yaml"
_given_files = [os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(f)
                for f in workflow.config_settings.configfiles]
if "scale" not in config:  # no --configfile: the smoke scale, with any --config KEY=VALUE on top
    _given = dict(config)
    config.update(yaml.safe_load(open(f"{workflow.basedir}/{DEFAULT_CONFIG}")))
    config.update(_given)
if workflow.exec_mode.name == "DEFAULT":  # the main process, not each job of a cluster run
    _which = (", ".join(_given_files) if _given_files else
              f"{DEFAULT_CONFIG} (no --configfile given; the paper grid is --configfile workflow/config/paper.yaml)")
    print(f"config: {_which}; scale {config.get('scale')!r}, results in {config.get('results_dir')}",
          file=sys.stderr)
for _key in ("archived", "allow_missing"):  # --config archived=true arrives as a string
    if isinstance(config.get(_key), str):
        config[_key] = config[_key].strip().lower() in ("1", "true", "yes", "on")
validate(config, f"{workflow.basedir}/workflow/config/schema.json")

R = config["results_dir"].rstrip("/")
ARCHIVED = bool(config.get("archived", False))
GEN = config["paper"]["generated_dir"].rstrip("/")
FIG = config["paper"]["figures_dir"].rstrip("/")
BUILD = config["paper"]["build_dir"].rstrip("/")
RES = config.get("resources", {})
STATS = config["stats"]

FIGURES = ["frontier", "lambda_sweep", "gate_heatmap", "loss_curves", "budget_tracking", "bench", "long_run"]
TABLES = ["results_table", "baselines_table", "claims_table", "planners_table", "setup_table", "frontier_table",
          "bench_table", "bench_verdicts", "exactness_text", "extra_tables"]
NOTEBOOKS = {
    "frontier": ["frontier", "lambda_sweep", "bench"],
    "training": ["loss_curves", "gate_heatmap", "budget_tracking", "long_run"],
    "tables": [],
}
FIGURE_FILES = [f"{FIG}/{f}.{ext}" for f in FIGURES for ext in ("pdf", "png", "json")]
TABLE_FILES = [f"{GEN}/{t}.tex" for t in TABLES] + [f"{GEN}/macros.tex"]
NOTEBOOK_HTML = [f"{R}/notebooks/{nb}.html" for nb in NOTEBOOKS]
PAPER_PDF = f"{BUILD}/drat.pdf"


def size_cfg(size):
    return config["sizes"][size]


def runs_of(size):
    """(run name, strategy, λ, budget GiB, seeds) of every training run group of one size."""
    s = size_cfg(size)
    out = [(run_name(b), b, None, None, s["seeds"]) for b in s.get("baselines", ["none", "full", "selective", "sac"])]
    out += [(run_name("drat", lam=l), "drat", float(l), None, s["seeds"]) for l in s["lambdas"]]
    out += [(run_name("drat", budget_gib=b), "drat", None, float(b), s.get("budget_seeds", s["seeds"]))
            for b in s.get("budgets_gib", [])]
    return out


def points_of(size):
    """(point, kind, strategy, λ, budget GiB) of every profiled plan of one size."""
    s, p = size_cfg(size), size_cfg(size)["profile"]
    base = p.get("baselines", s.get("baselines", ["none", "full", "selective", "sac"]))
    out = [(run_name(b), "baseline", b, None, None) for b in base]
    kinds = ["drat", "oracle"] if p.get("oracle", True) else ["drat"]
    for k in kinds:
        out += [(run_name(k, lam=l), k, "drat" if k == "drat" else "fixed", float(l), None)
                for l in p.get("lambdas", [])]
        out += [(run_name(k, budget_gib=b), k, "drat" if k == "drat" else "fixed", None, float(b))
                for b in p.get("budgets_gib", [])]
    return out


def run_dir(size, run, seed):
    return f"{R}/train/{size}/{run}/seed{seed}"


TRAIN_RUNS = [dict(size=size, run=run, strategy=strat, lam=lam, budget_gib=b, seed=seed,
                   dir=run_dir(size, run, seed))
              for size in config["sizes"] for run, strat, lam, b, seeds in runs_of(size) for seed in seeds]
PROFILE_POINTS = [dict(size=size, point=pt, kind=k, strategy=st, lam=lam, budget_gib=b,
                       path=f"{R}/profile/{size}/{pt}.json")
                  for size in config["sizes"] for pt, k, st, lam, b in points_of(size)]
# `bench.processes` > 1: the same bench in that many processes (bench/{size}/p{k}/), so that the
# analysis reads a step time as the median across processes and its spread across them
BENCH_PROCESSES = int(config.get("bench", {}).get("processes", 1))
BENCH = ([dict(size=size, process=k, path=(f"{R}/bench/{size}/frontier.json" if BENCH_PROCESSES == 1
                                           else f"{R}/bench/{size}/p{k}/frontier.json"))
          for size in config["sizes"] for k in range(BENCH_PROCESSES)]
         if config.get("bench", {}).get("enabled", True) else [])

# Exactness on the device (workflow/rules/exactness.smk): `drat bench exactness` on one size, per
# mode (plain kernels; deterministic ones), and one training run repeated into its own folder.
EXACT = config.get("exactness", {})
EXACT_SIZE = EXACT.get("size") or next(iter(config["sizes"]))
EXACTNESS = ([dict(size=EXACT_SIZE, mode=m, path=f"{R}/exactness/{EXACT_SIZE}/{m}/exactness.json")
              for m in EXACT.get("modes", ["plain", "deterministic"])] if EXACT.get("enabled", False) else [])
REPEATS = ([dict(size=EXACT_SIZE, run="none", seed=int(EXACT.get("repeat_seed", 0)),
                 dir=f"{R}/repeat/{EXACT_SIZE}/none/seed{int(EXACT.get('repeat_seed', 0))}",
                 of=f"{R}/train/{EXACT_SIZE}/none/seed{int(EXACT.get('repeat_seed', 0))}")]
           if EXACT.get("enabled", False) else [])
if REPEATS and not any(r["dir"] == REPEATS[0]["of"] for r in TRAIN_RUNS):
    raise ValueError(f"exactness: the repeated run {REPEATS[0]['of']} is not in the training grid; "
                     f"give size {EXACT_SIZE!r} the baseline `none` and seed {REPEATS[0]['seed']}")

# One longer run per name of `long_run.runs` (workflow/rules/train.smk: train_long), in long/:
# the same config as the grid's run of that name, with more steps
LONG = config.get("long_run", {})
LONG_SIZE = LONG.get("size") or next(iter(config["sizes"]))
LONG_RUNS = []
if LONG.get("enabled", False):
    if LONG_SIZE not in config["sizes"]:
        raise ValueError(f"long_run.size {LONG_SIZE!r} is not a key of sizes")
    for _run in LONG.get("runs", ["none"]):
        _r = parse_run_name(_run)  # a bad name fails here, with the grammar
        LONG_RUNS.append(dict(size=LONG_SIZE, run=_run, strategy=_r.kind, lam=_r.lam, budget_gib=_r.budget_gib,
                              seed=int(LONG.get("seed", 0)), steps=int(LONG["steps"]),
                              dir=f"{R}/long/{LONG_SIZE}/{_run}/seed{int(LONG.get('seed', 0))}"))

# `extra_benches`: more `drat bench` runs, each in extra/<name>/<subcommand>.json (rule bench_extra)
EXTRA = [dict(name=e["name"], kind=e["args"].split()[0], args=e["args"], title=e.get("title", e["name"]),
              path=f"{R}/extra/{e['name']}/{e['args'].split()[0]}.json")
         for e in config.get("extra_benches", [])]
if len({e["name"] for e in EXTRA}) != len(EXTRA):
    raise ValueError("extra_benches: every name must be unique")
for _e in EXTRA:
    if re.search(r"(^|\s)--(out|device)(\s|=|$)", _e["args"]):
        raise ValueError(f"extra_benches.{_e['name']}: leave out --out and --device (the pipeline sets them)")
    _steps = re.search(r"--steps[ =](\d+)", _e["args"])
    if config["device"] == "cuda" and _steps and int(_steps.group(1)) < 10:  # the bench refuses it there
        raise ValueError(f"extra_benches.{_e['name']}: --steps must be at least 10 on the GPU")

TRAIN_OUTPUTS = [f"{r['dir']}/summary.json" for r in TRAIN_RUNS]
EXTRA_OUTPUTS = [e["path"] for e in EXTRA]
LONG_OUTPUTS = [f"{r['dir']}/summary.json" for r in LONG_RUNS]
PROFILE_OUTPUTS = [p["path"] for p in PROFILE_POINTS]
BENCH_OUTPUTS = [b["path"] for b in BENCH]
EXACTNESS_OUTPUTS = [e["path"] for e in EXACTNESS]
REPEAT_OUTPUTS = [f"{r['dir']}/summary.json" for r in REPEATS]


def archived_digest():
    """sha256 over the committed raw results that exist (path and content). In archived mode the
    aggregate rule has no compute inputs, so this digest, as a param, is what makes Snakemake
    rebuild tables, figures and the PDF when new or changed runs are committed."""
    import hashlib

    h = hashlib.sha256()
    folders = set(TRAIN_OUTPUTS + REPEAT_OUTPUTS + LONG_OUTPUTS)
    for out in sorted(TRAIN_OUTPUTS + PROFILE_OUTPUTS + BENCH_OUTPUTS + EXACTNESS_OUTPUTS + REPEAT_OUTPUTS
                      + LONG_OUTPUTS + EXTRA_OUTPUTS):
        folder = Path(out).parent if out in folders else None
        files = sorted(folder.glob("*.json*")) if folder and folder.is_dir() else [Path(out)]
        for f in files:
            if f.is_file():
                h.update(str(f).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()

# the names of drat.runs as a wildcard pattern: its regex without anchors and group names
NAME_PATTERN = re.sub(r"\(\?P<\w+>", "(?:", NAME_RE.pattern.lstrip("^").rstrip("$"))


wildcard_constraints:
    size="[a-z]+",
    proc=r"\d+",
    run=NAME_PATTERN,  # train_fields refuses the oracle's names: it plans, it does not train
    point=NAME_PATTERN,
    seed=r"\d+",
    mode=r"(plain|deterministic)",


def threads_of(key):
    t = RES.get(key, 1)
    if t != "all":
        return int(t)
    try:
        return workflow.cores
    except WorkflowError:  # no --cores given (--rulegraph, --dag): no job runs, any number does
        return 1


SHAPE_FLAG_NAMES = {flag for flag, _, _, _ in SHAPE_FLAGS}


def model_flags(size):
    """A size's `model:` overrides as the model-shape flags of drat.model (`layers: 2` -> --layers 2)."""
    m = size_cfg(size).get("model", {})
    flags = [(f"--{k}", v) for k, v in m.items()]
    unknown = [f for f, _ in flags if f not in SHAPE_FLAG_NAMES]
    if unknown:
        raise ValueError(f"sizes.{size}.model: {', '.join(unknown)} is no model-shape flag of drat.model")
    return " ".join(f"{f} {v}" for f, v in flags)


def train_fields(wc, long=False):
    """The resolved TrainingConfig fields of one run (tokenizer and out are added by the script).
    `long`: the long run of that name (`long_run`: its steps, eval and log intervals)."""
    s = size_cfg(wc.size)
    fields = {**config.get("train", {}), **s.get("train", {})}
    if long:
        fields.update({k: LONG[k] for k in ("steps", "eval_every", "log_every") if k in LONG})
    m = s.get("model", {})
    fields.update({"size": wc.size, "n_layer": m.get("layers"), "n_embd": m.get("hidden"),
                   "n_head": m.get("heads"), "corpus": config["corpus"]["spec"],
                   "max_corpus_bytes": config["corpus"].get("max_bytes"),
                   "vocab_size": config["tokenizer"]["vocab_size"], "seed": int(wc.seed),
                   "device": config["device"]})
    run = parse_run_name(wc.run)
    if run.kind == "oracle":
        raise ValueError(f"{wc.run}: the oracle is a plan to profile, not a training run")
    fields.update(strategy=run.kind, lam=run.lam, budget_gib=run.budget_gib)
    return json.dumps(fields, sort_keys=True)
