"""The offload sections of `docs/performance.md`: a `drat bench offload` folder's command, table,
key numbers and targets, all read from its `offload.json` (performance.py renders them)."""

from __future__ import annotations

from .cells import num, pct

OFFLOAD_DEFAULTS = {"peak_cuts": (0.45, 0.6, 0.75), "steps": 12, "warmup": 3, "rounds": 3, "trace_steps": 3}
TRACED_HEADER = ["row", "step ms", "traced step ms", "compute idle ms", "exposed transfer ms (traced)",
                 "predicted ms", "D→H ms", "H→D ms", "copy time hidden"]
OFFLOAD_HEADER = ["row", "arms", "budget GiB", "peak GiB", "peak vs none", "step ms", "spread ms",
                  "step vs none", "sites rec./off.", "GiB each way (host)", "link util.", "predicted ms"]
BASELINES = ("save-on-cpu", "offload-all", "full-offload")


def _gib(x) -> str:
    return "—" if x is None else f"{x / 2**30:.2f}"


def offload_args(b) -> list[str]:
    """The flags of `drat bench offload` that differ from its defaults."""
    m, parts = b.meta, []
    cuts = tuple(float(r["name"].split("-cut")[1]) for r in b.rows if r["name"].startswith("drat-cut"))
    if cuts and cuts != OFFLOAD_DEFAULTS["peak_cuts"]:
        parts += ["--peak-cuts", ",".join(f"{c:g}" for c in cuts)]
    if m.get("arms", 3) == 2:
        parts += ["--arms", "store,recompute"]
    for key in ("steps", "rounds"):
        if m.get(key, OFFLOAD_DEFAULTS[key]) != OFFLOAD_DEFAULTS[key]:
            parts += [f"--{key}", str(m[key])]
    warmup = m.get("warmup", b.entry.warmup if b.entry else OFFLOAD_DEFAULTS["warmup"])
    if warmup != OFFLOAD_DEFAULTS["warmup"]:
        parts += ["--warmup", str(warmup)]
    if any(r["name"].startswith("compiled-") for r in b.rows):
        parts.append("--compiled")
    if m.get("arms", 3) == 3 and not m.get("match_baselines", False):  # older benches had no such rows
        parts.append("--no-match-baselines")
    # benches from before the trace record no trace_steps and traced nothing; the catalogue
    # entry names the count of benches that traced without recording it
    traced = b.meta.get("trace_steps", getattr(b.entry, "trace_steps", None) or 0)
    if traced != OFFLOAD_DEFAULTS["trace_steps"]:
        parts += ["--trace-steps", str(traced)]
    return parts


def traced_rows(b) -> list[list[str]]:
    """The rows `--trace-steps` traced (torch.profiler): the compute stream's idle time, the part of
    it under a copy (the measured exposed transfer) beside the cost model's, and copy times."""
    out = []
    for r in b.rows:
        if r.get("trace_exposed_transfer_ms") is None:
            continue
        hid = r.get("trace_copy_hidden_frac")
        out.append([f"`{r['name']}`", num(r.get("step_ms")), num(r.get("trace_traced_ms")),
                    num(r.get("trace_compute_idle_ms")),
                    num(r["trace_exposed_transfer_ms"]), num(r.get("predicted_exposed_ms")),
                    num(r.get("trace_d2h_ms")), num(r.get("trace_h2d_ms")),
                    "—" if hid is None or hid != hid else f"{100 * hid:.0f}%"])
    return out


def offload_rows(b) -> list[list[str]]:
    out = []
    for r in b.rows:
        if r.get("error"):
            out.append([f"`{r['name']}`", "3", "—", "failed", "—", "—", "—", "—", "—", "—", "—",
                        r["error"][:80].replace("|", "/")])
            continue
        rec, off = r.get("n_recomputed"), r.get("n_offloaded")
        out.append([f"`{r['name']}`", str(r.get("arms", 2)), num(r.get("budget_gib")),
                    num(r["peak_gib"], 3),
                    pct(r.get("peak_vs_none")), num(r["step_ms"]), num(r.get("step_spread_ms")),
                    pct(r.get("step_vs_none")),
                    "—" if rec is None and off is None else f"{rec or 0}/{off or 0}",
                    _gib(r.get("d2h_bytes")),
                    "—" if r.get("link_utilisation") is None else f"{100 * r['link_utilisation']:.0f}%",
                    num(r.get("predicted_step_ms"))])
    return out


def offload_headline(b) -> str:
    link = b.meta.get("link") or {}
    out = []
    if link.get("d2h_gbps"):
        out.append(f"host link under compute: D2H {link['d2h_gbps']:.1f} GB/s, "
                   f"H2D {link['h2d_gbps']:.1f} GB/s "
                   f"(alone {link.get('d2h_gbps_alone', float('nan')):.1f} / "
                   f"{link.get('h2d_gbps_alone', float('nan')):.1f}); a copy slows the matmuls by "
                   f"{100 * link.get('d2h_compute_slowdown', 0):.1f}% (D2H) and "
                   f"{100 * link.get('h2d_compute_slowdown', 0):.1f}% (H2D)")
    pinned = max((r.get("host_pinned_bytes") or 0 for r in b.rows), default=0)
    if pinned:
        out.append(f"the process's pool pinned {pinned / 2**30:.2f} GiB of host memory for all its plans")
    return "; ".join(out) + "." if out else ""


def offload_targets(b) -> list[str]:
    """The verdicts the bench computed (each beyond the measured spread), as bullets, and what the
    link could carry: the bytes that can leave while the forward runs (the measured device-to-host
    rate × the cost table's forward time), against what each three-arm plan moved."""
    out = [f"- {v}" for v in b.meta.get("verdicts", [])]
    link, costs = b.meta.get("link") or {}, b.meta.get("costs") or {}
    fwd_ms = sum(costs.get("time_ms") or [])
    moved = [r for r in b.rows if r["name"].startswith("drat3-") and r.get("d2h_bytes")]
    if link.get("d2h_gbps") and fwd_ms and moved:
        cap = link["d2h_gbps"] * 1e6 * fwd_ms
        out.append(f"- the link's reach: in the {fwd_ms:.1f} ms forward (the cost table's) "
                   f"{link['d2h_gbps']:.1f} GB/s moves {cap / 2**30:.2f} GiB off the device; "
                   + "; ".join(f"`{r['name']}` moved {r['d2h_bytes'] / 2**30:.2f} GiB "
                               f"({r['d2h_bytes'] / cap:.0%} of it), link busy "
                               f"{100 * (r.get('link_utilisation') or 0):.0f}% of its step" for r in moved)
                   + ". Bytes that leave later are still on the device at the peak, when backward starts.")
    return out


def offload_panel(ax, b) -> None:
    """One bench's rows as peak against step, relative to its `none`, with the target region
    (≥45% less peak at ≤8% more step) shaded; bars: the spread of the interleaved rounds."""
    none = next((r for r in b.rows if r["name"] == "none"), None)
    if none is None:
        return
    ax.axvspan(-100, 8, ymin=0, ymax=1, color="0.93", zorder=0)
    ax.axhspan(-100, -45, color="0.85", zorder=0, label="target: ≥45% less peak at ≤8% more step")
    for r in b.rows:
        if r.get("step_ms") is None or r.get("peak_gib") is None:
            continue
        x, y = 100 * (r["step_ms"] / none["step_ms"] - 1), 100 * (r["peak_gib"] / none["peak_gib"] - 1)
        name = r["name"]
        c, m = (("C3", "o") if name.startswith("drat3-") else ("C0", "s") if name.startswith("drat-")
                else ("C2", "D") if name.startswith("compiled-") else ("0.3", "^"))
        xerr = 100 * r.get("step_spread_ms", 0.0) / none["step_ms"] / 2
        ax.errorbar(x, y, xerr=xerr, color=c, marker=m, ms=6, capsize=2)
        ax.annotate(name, (x, y), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("symlog", linthresh=50)
    ax.set_xlim(left=-10)
    ax.set_ylim(-100, 5)
    ax.set_xlabel("step vs none (%)")
    ax.set_ylabel("peak vs none (%)")
    ax.set_title(f"{b.model_dir}: S={b.meta['seq_len']}, B={b.meta['batch_size']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


__all__ = ["offload_panel", "OFFLOAD_DEFAULTS", "OFFLOAD_HEADER", "TRACED_HEADER", "offload_args",
           "offload_rows", "traced_rows",
           "offload_headline",
           "offload_targets"]
