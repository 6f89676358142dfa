"""Pipeline step `manifest`: the expected grid, as the Snakefile computed it from the config.

    python -m drat.analysis.manifest --json '{"scale": "smoke", "runs": [...], ...}' \
        --out results/smoke/manifest.json

The Snakefile hands the grid over as one JSON object (every run folder, profile, bench and
exactness file the config expects); this writes it, indented, atomically, for
`python -m drat.analysis.aggregate --manifest`. Paths come from Snakemake, not from scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drat.analysis.manifest", description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True, help="the manifest, one JSON object")
    ap.add_argument("--out", required=True, help="manifest.json to write")
    a = ap.parse_args(argv)
    try:
        manifest = json.loads(a.json)
    except ValueError as e:
        print(f"manifest: error: --json is not JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(manifest, dict):
        print("manifest: error: --json must be a JSON object", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(out)
    n_runs, n_profiles = len(manifest.get("runs", [])), len(manifest.get("profiles", []))
    print(f"manifest: {n_runs} runs, {n_profiles} profiles -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
