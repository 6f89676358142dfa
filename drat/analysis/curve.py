"""Pipeline step `oracle_curve`: the cost model's own memory/time frontier, per size.

    python -m drat.analysis.curve --costs results/smoke/costs/tiny.json \
        --profile results/smoke/tables/profile.csv --out results/smoke/stats/oracle_curve.csv

For each size's cost table (the one every drat/oracle point of the size planned on), the exact
ILP oracle's least predicted recompute time at activation budgets from the floor to store-all
(`drat.oracle.oracle_curve`). The oracle is exact over every per-site plan, so this curve bounds
what any gate setting can reach on these costs: the frontier figure draws it next to the
measured points, and a target below it is out of reach of per-site recomputation. It is placed
in the frontier's units from the size's profiled `none`: memory = none's memory − the stored
activations + the plan's (peak allocated on CUDA, saved-activation bytes on the CPU), step time =
none's × (1 + predicted recompute fraction). A size without a profiled `none` is skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from ..costs import SiteCosts
from ..oracle import oracle_curve, place_curve

FIELDS = ["size", "point", "activation_budget_bytes", "activation_bytes", "time_frac", "n_recomputed",
          "memory_bytes", "memory_metric", "step_ms", "none_step_ms", "costs_file"]


def none_row(profile_csv: Path, size: str) -> dict | None:
    if not profile_csv.is_file() or profile_csv.stat().st_size == 0:
        return None
    with open(profile_csv, newline="") as f:
        return next((r for r in csv.DictReader(f) if r["size"] == size and r["point"] == "none"), None)


def curve_rows(costs_file: Path, profile_csv: Path, points: int) -> list[dict]:
    data = json.loads(costs_file.read_text())
    size, costs = data["size"], SiteCosts(**data["costs"])
    ref = none_row(profile_csv, size)
    if ref is None:
        print(f"oracle_curve: no profiled `none` for {size}: skipped", file=sys.stderr)
        return []
    # the curve is placed on `none`'s measurement: it must be of the shape the costs were taken at
    shape = {k: data.get(k) for k in ("batch_size", "seq_len")}
    ref_shape = {k: ref.get(k) for k in shape}
    if any(v is not None and ref_shape[k] not in (None, "") and int(ref_shape[k]) != int(v)
           for k, v in shape.items()):
        raise SystemExit(f"oracle_curve: {costs_file} was measured at batch {shape['batch_size']}, seq "
                         f"{shape['seq_len']}, but the profiled `none` of {size} at batch "
                         f"{ref_shape['batch_size']}, seq {ref_shape['seq_len']}: rerun the costs or "
                         f"profile rule so that both use the config's shape")
    peak = float(ref["peak_memory_bytes"]) if ref.get("peak_memory_bytes") else math.nan
    gpu = math.isfinite(peak)
    base = peak - costs.total_bytes if gpu else 0.0
    step_ms = float(ref["step_ms"])
    metric = "peak_memory_bytes" if gpu else "saved_activation_bytes"
    return [{"size": size, "point": k, **pt, "memory_metric": metric, "none_step_ms": step_ms,
             "costs_file": str(costs_file)}
            for k, pt in enumerate(place_curve(oracle_curve(costs, points), base, step_ms))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--costs", nargs="*", default=[], help="cost tables (results/<scale>/costs/<size>.json)")
    ap.add_argument("--profile", required=True, help="the aggregated profile table (tables/profile.csv)")
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    rows = [r for c in a.costs for r in curve_rows(Path(c), Path(a.profile), a.points)]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(out)
    print(f"oracle_curve: {len(rows)} points over {len({r['size'] for r in rows})} size(s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
