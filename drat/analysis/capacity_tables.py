"""The capacity sections of `docs/performance.md`: one `drat bench capacity` folder's command,
table and key numbers, and the long-context summary across a card's folders (performance.py
renders them).

A capacity folder is one process: each strategy at its largest batch under a hard memory cap,
or DRAT timed at batch sizes the user picked (`--drat-batches`, rows `drat-b<B>`). Processes
differ by whatever the device did between them, so the summary sets every row against the `none`
row of its own process, and calls a difference only where it exceeds the rows' measured spread.
"""

from __future__ import annotations

import re

from .cells import kilo, md_table, mfu_cell, num, pct, ratio, sites_cell, spread_cell, spread_frac

CAPACITY_DEFAULTS = {"strategies": ("none", "full", "compile-budget0.5", "drat"), "cap_gib": 40.0,
                     "steps": 10, "max_batch": 256}
CAPACITY_HEADER = ["row", "batch", "batch vs none", "peak GiB", "step ms",
                   "step p10–p90 ms (% of median)", "tokens/s", "tokens/s vs none", "MFU",
                   "batches probed (✗: out of memory)", "sites recomputed: kinds"]
LONG_CONTEXT_HEADER = ["strategy", "batch", "tokens/s", "tokens/s vs its process's `none`",
                       "step p10–p90 (% of median)", "folder"]
LONG_CONTEXT_CAP_GIB = 40.0
DRAT_FAMILIES = ("drat", "drat3")


def family(name: str) -> str:
    """A row's strategy: `drat3-b8` → `drat3` (DRAT timed at a batch the user picked)."""
    return re.sub(r"-b[0-9]+$", "", name)


def card_of(b) -> str:
    """The card a folder ran on, from its key (`h100-...` for the H100's; the H200's have none)."""
    return b.key.split("-", 1)[0] if b.key.startswith("h100-") else "h200"


def capacity_args(b, steps: int) -> list[str]:
    """The flags of `drat bench capacity` that differ from its defaults."""
    m, parts = b.meta, []
    if m.get("cap_gib", 40.0) != CAPACITY_DEFAULTS["cap_gib"]:
        parts += ["--cap-gib", f"{m['cap_gib']:g}"]
    strategies = tuple(dict.fromkeys(family(r["name"]) for r in b.rows))
    if strategies != CAPACITY_DEFAULTS["strategies"]:
        parts += ["--strategies", ",".join(strategies)]
    if m.get("drat_batches"):
        parts += ["--drat-batches", ",".join(str(x) for x in m["drat_batches"])]
    if m.get("cuda_alloc_conf"):
        parts += ["--alloc-conf", m["cuda_alloc_conf"]]
    if steps and steps != CAPACITY_DEFAULTS["steps"]:
        parts += ["--steps", str(steps)]
    if m.get("max_batch", CAPACITY_DEFAULTS["max_batch"]) != CAPACITY_DEFAULTS["max_batch"]:
        parts += ["--max-batch", str(m["max_batch"])]
    if m.get("trace_steps"):
        parts += ["--trace-steps", str(m["trace_steps"])]
    return parts


def fitted(r: dict) -> bool:
    """The row's batch ran under the cap and was timed (older files have no `fits` column)."""
    return r.get("fits", True) and bool(r.get("batch_size")) and r.get("tokens_per_s") is not None


def capacity_rows(b) -> list[list[str]]:
    none = b.none
    out = []
    for r in b.rows:
        probes = " ".join(f"{p['batch_size']}{'' if p.get('peak_gib') is not None else '✗'}"
                          for p in r.get("probes", []))
        other = r is not none and none is not None
        batch = str(r["batch_size"]) + ("" if r.get("search", "largest") == "largest" else " (asked)")
        if not fitted(r):
            out.append([f"`{r['name']}`", batch, "—", "does not fit", *["—"] * 5, probes or "—", "—"])
            continue
        out.append([f"`{r['name']}`", batch,
                    f"{r['batch_size'] / none['batch_size']:.1f}×" if other else "—",
                    num(r["peak_gib"]), num(r["step_ms"], 1), spread_cell(r.get("step_ms_all")),
                    kilo(r.get("tokens_per_s")),
                    pct(ratio(r.get("tokens_per_s"), none["tokens_per_s"])) if other else "—",
                    mfu_cell(r), probes or "—", sites_cell(r)])
    return out


def transfer_note(r: dict) -> str:
    """What a row that moved bytes did with the host link, and what its trace showed."""
    if not r.get("d2h_bytes"):
        return ""
    parts = [f"moved {r['d2h_bytes'] / 2**30:.2f} GiB each way per step"]
    if r.get("link_utilisation") is not None:
        parts.append(f"the link busy {100 * r['link_utilisation']:.0f}% of the step")
    if r.get("trace_exposed_transfer_ms") is not None:
        parts.append(f"traced: {r['trace_exposed_transfer_ms']:.1f} ms of exposed transfer, "
                     f"{100 * r['trace_copy_hidden_frac']:.0f}% of the copy time hidden, the compute stream "
                     f"idle {r['trace_compute_idle_ms']:.1f} ms")
    if r.get("alloc_retries") is not None:
        parts.append(f"{r['alloc_retries']} allocator retries over the timed steps, "
                     f"{r['reserved_gib']:.2f} GiB reserved")
    return f" (`{r['name']}` {'; '.join(parts)})"


def capacity_headline(b) -> str:
    none, out = b.none, []
    for r in b.rows:
        if r is none:
            continue
        if not fitted(r):
            out.append(f"`{r['name']}` does not fit B={r['batch_size']}")
        elif none is None:
            out.append(f"`{r['name']}` fits B={r['batch_size']} at {kilo(r['tokens_per_s'])} tokens/s")
        elif r.get("search", "largest") == "fixed":
            out.append(f"`{r['name']}` runs B={r['batch_size']} at "
                       f"{pct(ratio(r['tokens_per_s'], none['tokens_per_s']))} tokens/s" + transfer_note(r))
        else:
            out.append(f"`{r['name']}` fits {r['batch_size'] / none['batch_size']:.1f}× `none`'s batch "
                       f"(B={r['batch_size']} against {none['batch_size']}) at "
                       f"{pct(ratio(r['tokens_per_s'], none['tokens_per_s']))} tokens/s")
    return "; ".join(out) + "." if out else ""


# --------------------------------------------------------------------------- across folders


def _cap_benches(benches) -> dict[str, list]:
    """Per card, its capacity folders under the 40 GiB cap."""
    out: dict[str, list] = {}
    for b in benches:
        if b.stem == "capacity" and b.meta.get("cap_gib") == LONG_CONTEXT_CAP_GIB:
            out.setdefault(card_of(b), []).append(b)
    return out


def none_drift(benches) -> float:
    """How far `none`'s tokens/s moved between processes on one card: (max − min) / median of
    the `none` rows of these folders. What a comparison across processes must clear."""
    tps = sorted(b.none["tokens_per_s"] for b in benches if b.none is not None and fitted(b.none))
    return (tps[-1] - tps[0]) / tps[len(tps) // 2] if len(tps) > 1 else 0.0


def best_rows(benches) -> dict[str, list[dict]]:
    """Per card, each strategy's best row under the 40 GiB cap across that card's capacity
    folders, by tokens/s: the baselines at their largest batch, DRAT at whichever batch ran
    fastest per token. Each item: the row, its folder, its ratio to its own process's `none`
    (None where the process ran no `none`), and the spread a comparison with it must clear (its
    p10–p90 width plus how far `none` moved between that card's processes)."""
    out: dict[str, list[dict]] = {}
    for c, bs in _cap_benches(benches).items():
        drift, best = none_drift(bs), {}
        for b in bs:
            for r in b.rows:
                fam = family(r["name"])
                if not fitted(r) or (fam not in DRAT_FAMILIES and r.get("search", "largest") != "largest"):
                    continue
                none = b.none if b.none is not None and fitted(b.none) else None
                item = {"row": r, "folder": b.folder, "strategy": fam,
                        "vs_none": None if none is None or r is none else ratio(r["tokens_per_s"],
                                                                                 none["tokens_per_s"]),
                        "width": spread_frac(r) + drift}
                if fam not in best or r["tokens_per_s"] > best[fam]["row"]["tokens_per_s"]:
                    best[fam] = item
        out[c] = sorted(best.values(), key=lambda i: -i["row"]["tokens_per_s"])
    return out


def ceiling_rows(benches) -> dict[str, dict]:
    """Per card, `none` at its largest batch under a cap above 40 GiB, beside `none` under 40 GiB:
    how much a larger batch alone buys in tokens/s (no strategy that only saves memory can buy
    more)."""
    out = {}
    for b in benches:
        above = b.meta.get("cap_gib", 0) > LONG_CONTEXT_CAP_GIB
        if b.stem == "capacity" and above and b.none and fitted(b.none):
            out[card_of(b)] = {"row": b.none, "folder": b.folder, "cap_gib": b.meta["cap_gib"]}
    return out


def long_context_verdicts(items: list[dict], challenger: str) -> list[str]:
    """`challenger` against each other strategy's best, on tokens/s."""
    by = {i["strategy"]: i for i in items}
    c = by.get(challenger)
    if c is None:
        return []
    out = []
    for name, i in by.items():
        if name == challenger:
            continue
        diff, margin = ratio(c["row"]["tokens_per_s"], i["row"]["tokens_per_s"]), max(c["width"], i["width"])
        word = ("more" if diff > 0 else "fewer") if abs(diff) > margin else "no more and no fewer"
        out.append(f"`{challenger}` (B={c['row']['batch_size']}) against `{name}` "
                   f"(B={i['row']['batch_size']}): {pct(diff)} tokens/s, against a spread of "
                   f"±{100 * margin:.1f}%: {word} tokens/s")
    return out


LONG_CONTEXT_TITLE = "Long context under a 40 GiB cap"


def long_context_section(benches) -> str:
    """The summary: per card, each strategy's best tokens/s under 40 GiB, the ceiling a larger
    batch sets, and the offload arm's verdicts against each other strategy."""
    best, ceil = best_rows(benches), ceiling_rows(benches)
    if not best:
        return ""
    out = [f"## {LONG_CONTEXT_TITLE}", "",
           "`large` at S=4096, gathered from the capacity folders above: each strategy's fastest row "
           "per token across its card's folders. `none`, `full` and the compiler run at their "
           "largest batch; DRAT (`drat` two arms, `drat3` with the offload arm) at whichever batch "
           "the user picks, here the one that ran fastest. Rows come from different processes, so a "
           "difference counts only beyond the spread: the wider p10–p90 step width of the two rows "
           "plus how far `none`'s tokens/s moved between that card's processes.", ""]
    for c, items in best.items():
        out += [f"### {c.upper()}", "",
                md_table(LONG_CONTEXT_HEADER,
                         [[f"`{i['strategy']}`", str(i["row"]["batch_size"]), kilo(i["row"]["tokens_per_s"]),
                           pct(i["vs_none"]) if i["vs_none"] is not None else "—",
                           f"{100 * spread_frac(i['row']):.1f}%", f"`{i['folder']}/`"] for i in items]), "",
                f"`none`'s tokens/s moved {100 * none_drift(_cap_benches(benches)[c]):.1f}% between "
                "this card's processes.", ""]
        none = next((i for i in items if i["strategy"] == "none"), None)
        if c in ceil and none is not None:
            top = ceil[c]
            out += [f"The ceiling: `none` at its largest batch under {top['cap_gib']:g} GiB (B="
                    f"{top['row']['batch_size']}) runs {kilo(top['row']['tokens_per_s'])} tokens/s, "
                    f"{pct(ratio(top['row']['tokens_per_s'], none['row']['tokens_per_s']))} against "
                    f"`none` at B={none['row']['batch_size']} under 40 GiB (`{top['folder']}/`). A "
                    "strategy that only frees memory for a larger batch gains at most about this much.",
                    ""]
        verdicts = long_context_verdicts(items, "drat3")
        if verdicts:
            out += ["The offload arm against each strategy:", "", *[f"- {v}" for v in verdicts], ""]
    return "\n".join(out)


def capacity_panel(ax, benches, title: str) -> None:
    """tokens/s over the batch for one card's capacity folders (○ under the 40 GiB cap, △ under
    a larger one): where each strategy's batch lands, and what it runs per token."""
    colors = {"none": "C0", "full": "C2", "compile-budget0.5": "C1", "drat": "C3", "drat3": "C4"}
    seen = set()
    for b in benches:
        for r in b.rows:
            if not fitted(r):
                continue
            fam = family(r["name"])
            label = f"{fam} ({b.meta['cap_gib']:g} GiB cap)"
            marker = "o" if b.meta.get("cap_gib") == LONG_CONTEXT_CAP_GIB else "^"
            ax.scatter(r["batch_size"], r["tokens_per_s"] / 1e3, color=colors.get(fam, "C5"), marker=marker,
                       label=None if label in seen else label, s=22)
            seen.add(label)
    ax.set_xlabel("batch (sequences of 4096 tokens)", fontsize=8)
    ax.set_ylabel("tokens/s (thousands)", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6)
