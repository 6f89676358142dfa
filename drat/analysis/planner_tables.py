"""The planners section of `docs/performance.md`: `drat bench planners`' rows (its
`planners.json`) as one table per cost table and arm count, and the summary lines above them.
Everything is read from the file; performance.py appends the section when the file exists."""

from __future__ import annotations

import json
from pathlib import Path

PLANNERS_ROOT = Path("results/bench/cpu")  # one folder per `drat bench planners` process
PLANNERS = ("ilp", "drat", "local", "greedy")


def _cell(r: dict | None) -> str:
    if r is None or r.get("objective") is None:
        return "no plan"
    gap = r["gap_pts"]
    g = "0" if gap is not None and abs(gap) < 5e-4 else "—" if gap is None else f"{gap:+.3f}"
    return f"{g} · {r['plan_s']:.2f} s"


def planner_section(root: Path) -> str:
    """Markdown for the planners' benches (every results/bench/cpu/*/planners.json), or ''."""
    paths = sorted((Path(root) / PLANNERS_ROOT).glob("*/planners.json"))
    if not paths:
        return ""
    out = ["## Planners on the cost table (`drat bench planners`, CPU)", "",
           "Every plan is chosen on a cost table, and the loss does not depend on it, so planning is an "
           "optimisation over that table. Four planners side by side: `ilp` (scipy `milp`, the exact "
           "optimum up to its 60 s limit), `drat` (the gates: an annealed Gumbel relaxation trained on the "
           "table, rounded by greedy repair, finished by local search), `local` (local search alone, from "
           "the greedy plan) and `greedy` (λ: best single flips from store-all, or with three arms "
           "store-all itself; budget: best bytes per ms first). Each cell: the objective above the ILP's "
           "in points of a step (objectives are "
           "fractions of a step), then the planning time on this machine's CPU; `no plan` where the "
           "planner refused the target (the gates refuse a budget that only plans recomputing more "
           "than a step's time can meet; the ILP has no such limit). Tables: the measured ones "
           "of the offload and paper benches, and synthetic ones (`synthetic-<n>x`, n blocks) whose every "
           "block copies block 0 of the first measured table, ±10%.", ""]
    for path in paths:
        out += _one(path, root)
    return "\n".join(out) + "\n"


def _one(path: Path, root: Path) -> list[str]:
    d = json.loads(path.read_text())
    rows, meta = d["rows"], d["meta"]
    folder = path.parent.relative_to(root)
    groups: dict[tuple, dict] = {}
    for r in rows:
        key = (r["table"], r["n_sites"], r["arms"])
        groups.setdefault(key, {}).setdefault(r["target"], {})[r["planner"]] = r
    out = [f"### `{folder}/`", "",
           f"- command: `{_command(meta, folder)}`",
           f"- provenance: {meta.get('device', '?')}, torch {meta.get('torch_version', '?')}, commit "
           f"`{str(meta.get('git_commit', '?'))[:10]}`{' (dirty tree)' if meta.get('git_dirty') else ''}",
           f"- figure: [planners.png](../{folder}/planners.png)", ""]
    out += _summary(rows)
    out += _eager(rows, meta)
    for (table, n, arms), targets in groups.items():
        out += ["", f"#### {table} ({n} sites, {arms} arms)", "",
                "| target | " + " | ".join(PLANNERS) + " |", "|---" * (len(PLANNERS) + 1) + "|"]
        for tag, by in targets.items():
            out.append(f"| {tag} | " + " | ".join(_cell(by.get(k)) for k in PLANNERS) + " |")
    return out + [""]


def _command(meta: dict, folder: Path) -> str:
    """The command line that wrote the file (flags at their defaults left out)."""
    parts = ["drat bench planners", "--costs", *meta.get("sources", [])]
    if meta.get("synthetic_layers"):
        parts += ["--synthetic-layers", ",".join(map(str, meta["synthetic_layers"]))]
    if meta.get("lambdas", [0.2, 1.0, 5.0]) != [0.2, 1.0, 5.0]:
        parts += ["--lambdas", ",".join(f"{x:g}" for x in meta["lambdas"])]
    if meta.get("budgets", [0.25, 0.5, 0.75]) != [0.25, 0.5, 0.75]:
        parts += ["--budgets", ",".join(f"{x:g}" for x in meta["budgets"])]
    if meta.get("peak_cuts", [0.45]) != [0.45]:
        parts += ["--peak-cuts", ",".join(f"{x:g}" for x in meta["peak_cuts"]) or "''"]
    if meta.get("repeats", 3) != 3:
        parts += ["--repeats", str(meta["repeats"])]
    return " ".join(parts + ["--out", str(folder)])


def _eager(rows: list[dict], meta: dict) -> list[str]:
    """The eager targets (`peakcut<c>`): the step time each plan is predicted to add, beside the
    bytes the link can move before the peak, which bound what offloading takes off it."""
    cuts = [r for r in rows if r["target"].startswith("peakcut")]
    if not cuts:
        return []
    by = {(r["table"], r["target"], r["arms"], r["planner"]): r for r in cuts}
    out = ["", "At the eager targets (`peakcut<c>`: a plan must take c × `none`'s measured peak off the "
           "activations), the step time each plan is predicted to add, and what offloading can do: "
           "the link's reach is the bytes it moves during the forward (the forward's time × the "
           "device-to-host bandwidth); bytes offloaded beyond it are still on the device at the peak, "
           "so the rest of the cut must come from recomputation.", "",
           "| table | target | `none`'s peak | cut | link's reach | 2 arms, `ilp` | 3 arms, `ilp` "
           "| 3 arms, `drat` | offloaded (3 arms, `ilp`) |", "|---" * 9 + "|"]

    def pct(r) -> str:
        return "no plan" if r is None or r.get("objective") is None else f"+{100 * r['objective']:.1f}%"

    def gb(nbytes: float) -> str:
        return f"{nbytes / 1e9:.2f} GB"

    for table, target in dict.fromkeys((r["table"], r["target"]) for r in cuts):
        t = meta["tables"].get(table, {})
        peak = t.get("none_peak_bytes")
        c = float(target[len("peakcut"):])
        reach = t.get("link_reach_bytes")
        ilp3 = by.get((table, target, 3, "ilp"))
        off = ilp3.get("offloaded_bytes") if ilp3 else None
        two, gates = by.get((table, target, 2, "ilp")), by.get((table, target, 3, "drat"))
        out.append(f"| {table} | {target} | {peak / 2**30:.2f} GiB | {c * peak / 2**30:.2f} GiB | "
                   f"{gb(reach) if reach else '—'} | {pct(two)} | {pct(ilp3)} | {pct(gates)} | "
                   f"{gb(off) if off is not None else '—'} |")
    return out + _prefetch(cuts, meta)


def _prefetch(cuts: list[dict], meta: dict) -> list[str]:
    """The three-arm plans' prefetch distance (`costs.plan_prefetch_blocks`): what a distance of
    one block would add to the step, and what the planned one reloads early at the peak."""
    three = [r for r in cuts if r["arms"] == 3 and r["planner"] in ("ilp", "drat")
             and r.get("prefetch_blocks") is not None]
    if not three:
        return []
    out = ["", "Their prefetch distance: the backward's wait on reloads (simulated site by site) when "
           "they start one block ahead of their use, the distance planned for the plan and the wait at "
           "it, and the offloaded bytes that distance reloads as the backward starts beyond those the "
           "peak model already counts.", "",
           "| table | target | planner | wait, one block ahead | planned distance | wait at it | "
           "reloaded early at the head |", "|---" * 7 + "|"]
    for r in three:
        step_ms = meta["tables"].get(r["table"], {}).get("step_ms") or float("nan")
        d1 = r["reload_stall_d1_ms"]
        out.append(f"| {r['table']} | {r['target']} | `{r['planner']}` | {d1:.2f} ms "
                   f"({100 * d1 / step_ms:.1f}% of a step) | {r['prefetch_blocks']} blocks | "
                   f"{r['reload_stall_ms']:.2f} ms | {r['prefetched_at_head_bytes'] / 1e6:.0f} MB |")
    return out


def _summary(rows: list[dict]) -> list[str]:
    """Per arm count and planner: how often it matched the ILP, its worst gap, its planning times."""
    out = []
    ilp = {(r["table"], r["arms"], r["target"]): r["objective"] for r in rows
           if r["planner"] == "ilp" and r["objective"]}

    def rel(r) -> float:  # the gap as a fraction of the ILP's objective
        ref = ilp.get((r["table"], r["arms"], r["target"]))
        return r["objective"] / ref - 1 if ref and r["objective"] is not None else float("inf")

    for arms in sorted({r["arms"] for r in rows}):
        for k in PLANNERS:
            rs = [r for r in rows if r["planner"] == k and r["arms"] == arms and r["gap_pts"] is not None]
            if not rs:
                continue
            times = sorted(r["plan_s"] for r in rs)
            line = (f"- {arms} arms, `{k}`: median {times[len(times) // 2]:.2f} s, slowest {times[-1]:.1f} s")
            if k != "ilp":
                hit = sum(abs(r["gap_pts"]) < 5e-4 for r in rs)
                worst = max(rs, key=lambda r: r["gap_pts"])
                near = sum(rel(r) <= 0.02 + 1e-12 for r in rs)
                worst_rel = max(rs, key=rel)
                line += (f"; the ILP's objective in {hit} of {len(rs)} targets, worst "
                         f"{worst['gap_pts']:+.3f} points ({worst['table']}, {worst['target']}); "
                         f"within 2% of it in {near} of {len(rs)}, worst {100 * rel(worst_rel):+.1f}% "
                         f"({worst_rel['table']}, {worst_rel['target']})")
            out.append(line)
    return out


__all__ = ["planner_section", "PLANNERS_ROOT"]
