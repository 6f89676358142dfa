"""Pipeline steps `kernel` and `nb_*`: register the Jupyter kernel, execute a notebook with papermill.

    python -m drat.analysis.notebook kernel --out results/smoke/notebooks/kernel.json
    python -m drat.analysis.notebook run notebooks/frontier.py --ipynb out.ipynb --html out.html \
        --params-json '{"stats_dir": "..."}'

`kernel` registers this interpreter as the Jupyter kernel `drat` (`ipykernel install --user`) and
records it in a small JSON file. `run` reads a jupytext percent-format script, has papermill
inject the parameters after the cell tagged `parameters` and execute it on that kernel, and
writes the executed notebook and an HTML copy (nbconvert). The notebooks write the figures,
tables and macros themselves, into the folders their parameters name.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def install_kernel(name: str, out: Path) -> dict:
    """Register sys.executable as the kernel `name` for this user; write and return its record."""
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", name,
                    "--display-name", f"Python ({name})"], check=True)
    record = {"kernel": name, "python": sys.executable}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record))
    return record


def run_notebook(source: Path, ipynb: Path, html: Path, params: dict, kernel: str = "drat") -> None:
    """Execute the percent script `source` with `params` on `kernel`; write the notebook and its HTML."""
    import jupytext
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    nb = jupytext.read(source)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"{source} has no cell tagged `parameters`")
    ipynb.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / (source.stem + ".ipynb")
        jupytext.write(nb, src)
        pm.execute_notebook(str(src), str(ipynb), parameters=params, kernel_name=kernel, cwd=str(Path.cwd()),
                            log_output=True, progress_bar=False)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(ipynb, as_version=4))
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drat.analysis.notebook", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kernel", help="register this interpreter as a Jupyter kernel")
    k.add_argument("--name", default="drat")
    k.add_argument("--out", required=True, help="JSON record of the kernel to write")
    r = sub.add_parser("run", help="execute a jupytext percent script with papermill, keep an HTML copy")
    r.add_argument("source", help="notebooks/NAME.py (jupytext percent format)")
    r.add_argument("--ipynb", required=True, help="executed notebook to write")
    r.add_argument("--html", required=True, help="HTML copy to write")
    r.add_argument("--kernel", default="drat")
    r.add_argument("--params-json", default="{}", help="the parameters, one JSON object")
    a = ap.parse_args(argv)
    try:
        if a.command == "kernel":
            print(json.dumps(install_kernel(a.name, Path(a.out))))
            return 0
        params = json.loads(a.params_json)
        if not isinstance(params, dict):
            raise ValueError("--params-json must be a JSON object")
        if not Path(a.source).is_file():
            raise ValueError(f"no notebook {a.source}")
        run_notebook(Path(a.source), Path(a.ipynb), Path(a.html), params, a.kernel)
    except ValueError as e:  # json.JSONDecodeError included
        print(f"notebook: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
