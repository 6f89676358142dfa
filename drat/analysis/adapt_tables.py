"""The `drat bench adapt` sections of `docs/performance.md` and the paper: per stage of a
sequence-length warm-up, each planner's peak against the one budget, its step against the
re-profiled exact plan, and what it paid to plan (performance.py and extra_tables.py render them).

A difference of steps is called only where it exceeds the wider of the two rows' spreads across
their timing rounds (max − min of the round medians), as everywhere else in the generated docs.
"""

from __future__ import annotations

from .cells import num, pct

ADAPT_DEFAULTS = {"batch_size": 2, "peak_cut": 0.45, "steps_per_stage": 30, "rounds": 3, "steps": 10,
                  "warmup": 2}
ADAPT_HEADER = ["S", "planner", "peak GiB", "within budget", "step ms", "spread ms", "step vs ilp-reprofile",
                "beyond spread", "sites recomputed", "recompute (model)", "planning s",
                "online: max step peak GiB (steps over)"]
REFERENCE = "ilp-reprofile"


def adapt_args(b) -> list[str]:
    """The flags of `drat bench adapt` that differ from its defaults (the model's are the caller's)."""
    m = b.meta
    parts = ["--seq-lens", ",".join(str(s) for s in m["seq_lens"])]
    for key, flag in (("batch_size", "--batch-size"), ("steps_per_stage", "--steps-per-stage"),
                      ("rounds", "--rounds"), ("steps", "--steps"), ("warmup", "--warmup")):
        if m.get(key) is not None and m[key] != ADAPT_DEFAULTS[key]:
            parts += [flag, str(m[key])]
    if m.get("peak_cut") is not None and m["peak_cut"] != ADAPT_DEFAULTS["peak_cut"]:
        parts += ["--peak-cut", f"{m['peak_cut']:g}"]
    return parts


def _beyond(a: dict, ref: dict) -> bool:
    spread = max(a.get("step_spread_ms", 0.0), ref.get("step_spread_ms", 0.0))
    return abs(a["step_ms"] - ref["step_ms"]) > spread


def _stage(b, seq_len: int) -> dict[str, dict]:
    return {r["name"]: r for r in b.rows if r["seq_len"] == seq_len}


def adapt_rows(b) -> list[list[str]]:
    out = []
    for s in b.meta["seq_lens"]:
        stage = _stage(b, s)
        ref = stage.get(REFERENCE)
        for name, r in stage.items():
            online = (f"{num(r['online_max_peak_gib'], 3)} ({r['online_steps_over']})"
                      if r.get("online_max_peak_gib") is not None else "—")
            beyond = "—" if ref is None or name == REFERENCE else ("yes" if _beyond(r, ref) else "no")
            out.append([str(s), f"`{name}`", num(r["peak_gib"], 3), "yes" if r["within_budget"] else "**no**",
                        num(r["step_ms"]), num(r.get("step_spread_ms")), pct(r.get("step_vs_reprofile")),
                        beyond, str(r["n_recomputed"]), f"{100 * r['recompute_frac']:.1f}%",
                        num(r.get("plan_s"), 1), online])
    return out


def adapt_headline(b) -> str:
    """Per stage, each planner's step against the re-profiled plan (where beyond the spread), the
    online gates' budget record, and the planning time of a re-plan with and without a profile."""
    m, parts = b.meta, []
    for s in m["seq_lens"]:
        stage = _stage(b, s)
        ref = stage.get(REFERENCE)
        if ref is None:
            continue
        calls = []
        for name in ("ilp-once", "ilp-scaled", "drat-refit", "drat-online"):
            r = stage.get(name)
            if r is None:
                continue
            over = "" if r["within_budget"] else ", over budget"
            step = pct(r["step_vs_reprofile"]) if _beyond(r, ref) else "within spread"
            calls.append(f"`{name}` {step}{over}")
        parts.append(f"at S={s}: " + ", ".join(calls))
    online = m.get("online") or []
    over = sum(o["peak_gib"] > 1.01 * m["budget_gib"] for o in online)
    later = [r for r in b.rows if r["stage"] > 0]
    scaled = [r["plan_s"] for r in later if r["name"] == "ilp-scaled"]
    fresh = [r["plan_s"] for r in later if r["name"] == REFERENCE]
    text = (f"against the re-profiled exact plan under {m['budget_gib']:.3g} GiB, "
            + "; ".join(parts) + f"; the online gates ran {over} of {len(online)} steps over the budget")
    if scaled and fresh:
        text += (f"; a re-plan on the scaled table took {max(scaled):.1f} s at most, one on a re-profiled "
                 f"table {max(fresh):.1f} s at most")
    return text + "."


__all__ = ["ADAPT_DEFAULTS", "ADAPT_HEADER", "adapt_args", "adapt_headline", "adapt_rows"]
