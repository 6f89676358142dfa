"""Execute a jupytext percent-format notebook with papermill and keep an HTML copy.

    python workflow/scripts/run_notebook.py notebooks/frontier.py --ipynb out.ipynb --html out.html \
        --kernel drat --params-json '{"stats_dir": "..."}'

jupytext turns the script into a notebook, papermill injects the parameters after the cell tagged
`parameters` and runs it on the registered kernel, nbconvert writes the HTML.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", help="notebooks/NAME.py (jupytext percent format)")
    ap.add_argument("--ipynb", required=True, help="executed notebook to write")
    ap.add_argument("--html", required=True, help="HTML copy to write")
    ap.add_argument("--kernel", default="drat")
    ap.add_argument("--params-json", default="{}")
    a = ap.parse_args(argv)

    import jupytext
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    nb = jupytext.read(a.source)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        print(f"run_notebook: error: {a.source} has no cell tagged `parameters`", file=sys.stderr)
        return 1
    Path(a.ipynb).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / (Path(a.source).stem + ".ipynb")
        jupytext.write(nb, src)
        pm.execute_notebook(str(src), a.ipynb, parameters=json.loads(a.params_json), kernel_name=a.kernel,
                            cwd=str(Path.cwd()), log_output=True, progress_bar=False)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(a.ipynb, as_version=4))
    Path(a.html).write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
