"""Collect per-run outputs into tidy CSVs: the pipeline's `aggregate` step.

    python -m drat.analysis.aggregate --manifest results/smoke/manifest.json --out results/smoke/tables

The manifest (written by the Snakefile from the config) lists every expected training run folder,
profile JSON and bench frontier. Outputs in --out:

    runs.csv           one row per training run (final val loss, final plan bytes, step time, provenance)
    curves.csv         every metrics.jsonl record: train loss and validation loss per step
    gates.csv          the last logged gate probabilities/decisions of each drat run (layer × site)
    profile.csv        one row per profiled plan (saved bytes; on CUDA peak memory; median step time)
    profile_steps.csv  every timed step of every profiled plan (the bootstrap resamples these)
    profile_sites.csv  per-site decision and bytes of every profiled plan
    bench.csv          the rows of `drat bench frontier` (one process, side by side), per size
    exactness.csv      the rows of `drat bench exactness` per mode: each strategy's loss and
                       gradients against `none`, bitwise, on the run device
    repeats.csv        a training run run again against the original: final losses, first
                       logged step whose training loss differs
    long_runs.csv      the longer runs (`long_run` in the config): columns of runs.csv
    long_curves.csv    their metrics.jsonl records: columns of curves.csv
    extra.json         the `extra_benches` present: name, kind, title and the path of their JSON
    provenance.json    the devices, torch versions and commits the results came from
    missing.json       expected results that are absent or unfinished

A missing or unfinished run is listed by folder on stderr and in missing.json. With
`--allow-missing` that is a warning (archived results may be partial); without it, an error.
Nothing found at all is always an error.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

RUN_FIELDS = ["size", "run", "strategy", "lam", "budget_gib", "seed", "dir", "finished", "step",
              "initial_val_loss", "final_val_loss", "final_val_ppl", "saved_activation_bytes",
              "mean_saved_activation_bytes", "peak_memory_bytes", "last_peak_memory_bytes",
              "step_peak_max_bytes", "step_peak_p99_bytes", "n_step_peaks", "step_ms",
              "tokens_per_s", "wall_time_s", "params", "final_lam", "n_stored", "n_sites", "tokens_seen",
              "device", "torch_version", "git_commit", "git_dirty", "source_sha256"]
CURVE_FIELDS = ["size", "run", "seed", "kind", "step", "loss", "val_loss", "lam", "saved_activation_bytes",
                "step_ms"]
GATE_FIELDS = ["size", "run", "lam", "budget_gib", "seed", "label", "layer", "site", "p_store", "stored"]
PROFILE_FIELDS = ["size", "point", "kind", "strategy", "lam", "budget_gib", "saved_activation_bytes",
                  "model_state_bytes", "peak_memory_bytes", "reserved_memory_bytes", "step_ms",
                  "tokens_per_s", "n_recomputed", "n_sites", "params", "batch_size", "seq_len", "device",
                  "torch_version", "git_commit", "source_sha256", "path"]


EXACTNESS_FIELDS = ["size", "mode", "name", "n_recomputed", "loss", "loss_equal", "grads_equal",
                    "n_params_differing", "max_abs_grad_diff", "rebuilds", "deterministic", "device",
                    "torch_version", "git_commit", "source_sha256"]
REPEAT_FIELDS = ["size", "run", "seed", "dir", "of", "final_val_loss", "of_final_val_loss", "abs_gap",
                 "initial_val_loss_equal", "first_differing_step", "logged_steps", "device", "git_commit"]


class AggregateError(RuntimeError):
    """Expected results are missing (the message names them) or none was found."""


def step_spread(step_ms_all) -> dict:
    """How far one row's timed steps spread: the 10th and 90th percentile step (ms) and their
    distance as % of the median. On the H200, rows that recompute spread by tens of percent within
    the row while store-all rows hold within a few percent, so a median alone hides how much two
    rows' difference can be trusted."""
    if not step_ms_all:
        return {}
    steps = list(step_ms_all) * (2 if len(step_ms_all) == 1 else 1)  # quantiles needs two points
    q = statistics.quantiles(steps, n=10, method="inclusive")
    med = statistics.median(steps)
    # interpolation can put p10 a rounding step above the median of tied steps (or p90 below):
    # clamped, so a plot's error bar (median - p10, p90 - median) is never negative
    p10, p90 = min(q[0], med), max(q[-1], med)
    return {"step_ms_p10": p10, "step_ms_p90": p90, "step_spread_pct": 100 * (p90 - p10) / med}


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a line cut short by a killed run is skipped."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def split_label(label: str) -> tuple[str, str]:
    """'L3.mlp_up' -> ('3', 'mlp_up'); model-level sites ('embed', 'lm_head_loss') -> ('model', name)."""
    head, sep, rest = label.partition(".")
    if sep and head.startswith("L") and head[1:].isdigit():
        return head[1:], rest
    return "model", label


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else math.nan


def _quantile(xs: list[float], q: float) -> float:
    """The q-quantile of xs, linearly interpolated (numpy's default)."""
    import numpy as np

    return float(np.quantile(np.asarray(xs, dtype=float), q))


def cut_off(path: Path) -> bool:
    """A job killed mid-way leaves `<output>.incomplete` (the scripts of drat/analysis/jobs.py):
    its output may hold only part of the rows."""
    return Path(str(path) + ".incomplete").exists()


def run_complete(run_dir: Path) -> tuple[bool, str]:
    """(complete, why not): a finished run has config.json, metrics.jsonl and summary.json(finished)."""
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        if not (run_dir / name).is_file():
            return False, f"no {name}"
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except ValueError:
        return False, "unreadable summary.json"
    if not summary.get("finished", False):
        return False, f"unfinished (stopped at step {summary.get('step')})"
    return True, ""


def summarize_run(run_dir: Path, meta: dict) -> tuple[dict, list[dict], list[dict]]:
    """(runs.csv row, curves.csv rows, gates.csv rows) of one finished run folder."""
    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    # steady state: the second half of the logged intervals (the gates have settled, caches are warm)
    steady = train[len(train) // 2:] if len(train) > 1 else train
    plan = summary.get("final_plan") or {}
    saved = plan.get("saved_activation_bytes", train[-1]["saved_activation_bytes"] if train else math.nan)
    peaks = [r["peak_memory_bytes"] for r in train if r.get("peak_memory_bytes") is not None]
    # every step's own peak where the trainer logs them (CUDA), else one per log interval
    step_peaks = [b for r in train for b in (r.get("step_peak_bytes") or [])]
    per_step = bool(step_peaks)
    step_peaks = step_peaks or peaks
    prov = summary.get("provenance", {})
    row = {
        **{k: meta.get(k) for k in ("size", "run", "strategy", "lam", "budget_gib", "seed")},
        "dir": str(run_dir),
        "finished": bool(summary.get("finished")),
        "step": summary.get("step"),
        "initial_val_loss": summary.get("initial_val_loss"),
        "final_val_loss": summary.get("final_val_loss"),
        "final_val_ppl": summary.get("final_val_ppl"),
        "saved_activation_bytes": saved,
        "mean_saved_activation_bytes": statistics.fmean(r["saved_activation_bytes"] for r in steady)
        if steady else math.nan,
        "peak_memory_bytes": max(peaks) if peaks else None,
        # the last logged peak: the steady state if the trainer resets the peak per log interval
        "last_peak_memory_bytes": peaks[-1] if peaks else None,
        "step_peak_max_bytes": max(step_peaks) if step_peaks else None,
        "step_peak_p99_bytes": _quantile(step_peaks, 0.99) if step_peaks else None,
        "n_step_peaks": len(step_peaks) if per_step else None,  # None: one peak per log interval
        "step_ms": _median([r.get("step_ms") for r in steady]),
        "tokens_per_s": _median([r.get("tokens_per_s") for r in steady]),
        "wall_time_s": summary.get("wall_time_s"),
        "params": summary.get("params"),
        "final_lam": summary.get("lam"),
        "n_stored": plan.get("n_stored"),
        "n_sites": len(plan.get("stored", [])) or None,
        "tokens_seen": summary.get("tokens_seen"),
        "device": prov.get("device"),
        "torch_version": prov.get("torch_version"),
        "git_commit": prov.get("git_commit"),
        "git_dirty": prov.get("git_dirty"),
        "source_sha256": prov.get("source_sha256"),
    }
    key = {k: meta.get(k) for k in ("size", "run", "seed")}
    curves = [{**key, "kind": r["kind"], "step": r["step"], "loss": r.get("loss"),
               "val_loss": r.get("val_loss"), "lam": r.get("lam"),
               "saved_activation_bytes": r.get("saved_activation_bytes"), "step_ms": r.get("step_ms")}
              for r in records if r.get("kind") in ("train", "eval")]
    gates = []
    last = next((r for r in reversed(train) if "gates" in r), None)
    if last is not None:
        for label, g in last["gates"].items():
            layer, site = split_label(label)
            gates.append({**key, "lam": meta.get("lam"), "budget_gib": meta.get("budget_gib"), "label": label,
                          "layer": layer, "site": site, "p_store": g["p_store"], "stored": g["stored"]})
    return row, curves, gates


def summarize_profile(path: Path, meta: dict) -> tuple[dict, list[dict], list[dict]]:
    """(profile.csv row, profile_steps.csv rows, profile_sites.csv rows) of one profile JSON."""
    p = json.loads(Path(path).read_text())
    sites = p.get("sites", [])
    row = {**{k: meta.get(k) for k in ("size", "point", "kind", "strategy", "lam", "budget_gib")},
           **{k: p.get(k) for k in ("saved_activation_bytes", "model_state_bytes", "peak_memory_bytes",
                                    "reserved_memory_bytes", "step_ms", "tokens_per_s", "params",
                                    "batch_size", "seq_len", "device", "torch_version", "git_commit",
                                    "source_sha256")},
           "n_recomputed": sum(1 for s in sites if s.get("decision") == "recompute"),
           "n_sites": len(sites), "path": str(path)}
    key = {"size": meta.get("size"), "point": meta.get("point")}
    steps = [{**key, "step": i, "step_ms": t} for i, t in enumerate(p.get("step_ms_all") or [])]
    site_rows = [{**key, "layer": "model" if s.get("layer") is None else str(s["layer"]), "site": s["site"],
                  "decision": s["decision"], "bytes": s.get("bytes")} for s in sites]
    return row, steps, site_rows


def summarize_repeat(meta: dict) -> dict:
    """repeats.csv row: a run and its repeat, compared record by record (train losses, bitwise)."""
    mine, orig = Path(meta["dir"]), Path(meta["of"])
    a, b = (json.loads((d / "summary.json").read_text()) for d in (mine, orig))
    ta = {r["step"]: r.get("loss") for r in read_jsonl(mine / "metrics.jsonl") if r.get("kind") == "train"}
    tb = {r["step"]: r.get("loss") for r in read_jsonl(orig / "metrics.jsonl") if r.get("kind") == "train"}
    common = sorted(set(ta) & set(tb))
    first = next((k for k in common if ta[k] != tb[k]), None)
    prov = a.get("provenance", {})
    return {**{k: meta.get(k) for k in ("size", "run", "seed")}, "dir": str(mine), "of": str(orig),
            "final_val_loss": a.get("final_val_loss"), "of_final_val_loss": b.get("final_val_loss"),
            "abs_gap": abs(a["final_val_loss"] - b["final_val_loss"]),
            "initial_val_loss_equal": a.get("initial_val_loss") == b.get("initial_val_loss"),
            "first_differing_step": first, "logged_steps": len(common), "device": prov.get("device"),
            "git_commit": prov.get("git_commit")}


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or sorted({k for r in rows for k in r})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    tmp.replace(path)


def aggregate(manifest: dict, out: Path, allow_missing: bool = False, log=None) -> dict:
    """Read everything the manifest lists; write the CSVs; return {'missing': ..., counts}."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out.mkdir(parents=True, exist_ok=True)
    profiles, steps, sites, bench = [], [], [], []
    missing: dict[str, list[str]] = {"runs": [], "profiles": [], "bench": []}

    def read_runs(kind: str) -> tuple[list[dict], list[dict], list[dict]]:
        """The finished run folders of manifest[kind]; the others are listed as missing."""
        rows, curves, gates = [], [], []
        missing[kind] = []
        for meta in manifest.get(kind, []):
            d = Path(meta["dir"])
            ok, why = run_complete(d)
            if not ok:
                missing[kind].append(f"{d} ({why})")
                continue
            r, c, g = summarize_run(d, meta)
            rows.append(r)
            curves += c
            gates += g
        return rows, curves, gates

    runs, curves, gates = read_runs("runs")
    long_runs, long_curves, _ = read_runs("long_runs")  # the longer runs: their own tables
    missing.update(exactness=[], repeats=[])

    def present(meta: dict, kind: str) -> Path | None:
        """The output a manifest entry names, or None (then listed as missing or cut off)."""
        p = Path(meta["path"])
        if not p.is_file() or cut_off(p):
            missing[kind].append(str(p) + (" (cut off)" if p.is_file() else ""))
            return None
        return p

    def provenance_of(data: dict) -> dict:
        m = data.get("meta", {})
        return {k: m.get(k) for k in ("device", "torch_version", "git_commit", "source_sha256")}

    for meta in manifest.get("profiles", []):
        if (p := present(meta, "profiles")) is None:
            continue
        r, s, st = summarize_profile(p, meta)
        profiles.append(r)
        steps += s
        sites += st
    for meta in manifest.get("bench", []):
        if (p := present(meta, "bench")) is None:
            continue
        data = json.loads(p.read_text())
        bench += [{"size": meta["size"], "process": meta.get("process", 0),
                   **{k: v for k, v in row.items() if k not in ("step_ms_all", "step_ms_rounds")},
                   **step_spread(row.get("step_ms_all")), **provenance_of(data)}
                  for row in data.get("rows", [])]
    exact, repeats = [], []
    for meta in manifest.get("exactness", []):
        if (p := present(meta, "exactness")) is None:
            continue
        data = json.loads(p.read_text())
        exact += [{"size": meta["size"], "mode": meta["mode"], **row,
                   "deterministic": data.get("meta", {}).get("deterministic"), **provenance_of(data)}
                  for row in data.get("rows", [])]
    for meta in manifest.get("repeats", []):
        for d in (Path(meta["dir"]), Path(meta["of"])):
            ok, why = run_complete(d)
            if not ok:
                missing["repeats"].append(f"{d} ({why})")
                break
        else:
            repeats.append(summarize_repeat(meta))
    extra = []  # more `drat bench` runs: the notebooks read their JSON through this list
    missing["extra"] = []
    for meta in manifest.get("extra", []):
        if (p := present(meta, "extra")) is not None:
            extra.append({**{k: meta.get(k) for k in ("name", "kind", "title", "path")},
                          **provenance_of(json.loads(p.read_text()))})
    n_missing = sum(len(v) for v in missing.values())
    n_found = len(runs) + len(profiles) + len(bench) + len(exact) + len(repeats) + len(long_runs) + len(extra)
    if n_missing:
        lines = [f"  {kind}: {item}" for kind, items in missing.items() for item in items]
        where = manifest.get("results_dir", "?")
        msg = f"{n_missing} expected result(s) missing or unfinished under {where}:\n" + "\n".join(lines)
        if n_found == 0:
            raise AggregateError(msg + "\nno results at all: nothing to aggregate (run the pipeline, or "
                                 "commit the raw results of the runs first)")
        if not allow_missing:
            raise AggregateError(msg)
        log("WARNING: " + msg)
    _write_csv(out / "runs.csv", runs, RUN_FIELDS)
    _write_csv(out / "curves.csv", curves, CURVE_FIELDS)
    _write_csv(out / "gates.csv", gates, GATE_FIELDS)
    _write_csv(out / "profile.csv", profiles, PROFILE_FIELDS)
    _write_csv(out / "profile_steps.csv", steps, ["size", "point", "step", "step_ms"])
    _write_csv(out / "profile_sites.csv", sites, ["size", "point", "layer", "site", "decision", "bytes"])
    bench_fields = ["size"] + [f for f in sorted({k for r in bench for k in r}) if f != "size"]
    _write_csv(out / "bench.csv", bench, bench_fields if bench else ["size"])
    _write_csv(out / "exactness.csv", exact, EXACTNESS_FIELDS)
    _write_csv(out / "repeats.csv", repeats, REPEAT_FIELDS)
    _write_csv(out / "long_runs.csv", long_runs, RUN_FIELDS)
    _write_csv(out / "long_curves.csv", long_curves, CURVE_FIELDS)
    (out / "extra.json").write_text(json.dumps(extra, indent=2) + "\n")
    every = runs + profiles + bench + exact + repeats + long_runs + extra  # what a figure may draw on
    prov: dict[str, Any] = {k: sorted({str(r.get(k)) for r in every if r.get(k) is not None})
                            for k in ("device", "torch_version", "git_commit", "source_sha256")}
    prov.update({"scale": manifest.get("scale"), "results_dir": manifest.get("results_dir"),
                 "n_runs": len(runs), "n_profiles": len(profiles), "n_bench_rows": len(bench),
                 "n_long_runs": len(long_runs)})
    (out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    result = {"missing": missing, "n_missing": n_missing, "n_runs": len(runs), "n_profiles": len(profiles),
              "n_bench_rows": len(bench), "expected_runs": len(manifest.get("runs", []))}
    (out / "missing.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drat.analysis.aggregate", description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True, help="manifest.json written by the Snakefile")
    ap.add_argument("--out", required=True, help="folder for the CSVs")
    ap.add_argument("--allow-missing", action="store_true",
                    help="warn about missing runs instead of failing (archived results)")
    a = ap.parse_args(argv)
    try:
        res = aggregate(json.loads(Path(a.manifest).read_text()), Path(a.out), a.allow_missing)
    except AggregateError as e:
        print(f"drat.analysis.aggregate: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in res.items() if k != "missing"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
