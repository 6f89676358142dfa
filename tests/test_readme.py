"""The README tells the truth: its Python runs as written, its results table is the paper's, it stays
short, and every relative link in it and in docs/ reaches a file of the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drat.analysis import readme_table

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 300

_PY_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def python_blocks() -> list[str]:
    return _PY_BLOCK.findall(README.read_text(encoding="utf-8"))


def relative_links() -> list[tuple[str, str]]:
    """(markdown file, link target) of every relative link in README.md and docs/*.md."""
    files = [README, *sorted((REPO / "docs").glob("*.md"))]
    out = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)  # code is not a link
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor in the same page
            out.append((str(f.relative_to(REPO)), target))
    return out


def test_readme_has_python_to_run():
    assert python_blocks(), "README.md has no ```python block"


@pytest.mark.slow  # a fresh interpreter per block: seconds each
@pytest.mark.parametrize("i", range(len(python_blocks())))
def test_readme_python_block_runs_as_written(i, tmp_path):
    """Each block runs in a fresh interpreter, on the CPU, from an empty folder: no name it uses
    may come from anywhere but the block itself."""
    code = python_blocks()[i]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"README python block {i} failed:\n{proc.stderr[-4000:]}"
    # the quick start's claim beyond its own bitwise assert: gates recompute something, and that
    # keeps fewer bytes for backward than storing everything
    m = re.search(r"(\d+) of (\d+) sites recomputed: ([\d.]+) of ([\d.]+) MiB kept", proc.stdout)
    if "sites recomputed" in code:
        assert m, proc.stdout
        n_rec, n_sites, kept, kept_all = int(m[1]), int(m[2]), float(m[3]), float(m[4])
        assert 0 < n_rec < n_sites and kept < kept_all, proc.stdout


def test_readme_results_block_is_the_generators_output():
    got = readme_table.current_block(README.read_text(encoding="utf-8"))
    assert got == readme_table.render_table(), (
        "README.md's results block is stale: run python -m drat.analysis.readme_table")


def test_readme_table_generator_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{readme_table.BEGIN}\nold\n{readme_table.END}\nafter\n")
    assert readme_table.main(["--readme", str(readme), "--check"]) == 1
    assert readme_table.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# t\n\nbefore\n") and text.endswith(f"{readme_table.END}\nafter\n")
    assert "old" not in text
    assert readme_table.main(["--readme", str(readme), "--check"]) == 0


def test_readme_table_reads_only_committed_results():
    """A fresh clone must render the same table: every file the generator reads is tracked by git."""
    proc = subprocess.run(["git", "ls-files", "--", "results/paper"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    tracked = set(proc.stdout.splitlines())
    root = readme_table.PAPER
    read = [root / "bench" / s / "frontier.json" for s in readme_table.SIZES]
    read += [f for s in readme_table.SIZES for f in (root / "train" / s).glob("*/seed*/summary.json")]
    read += [f for s in readme_table.SIZES for f in (root / "profile" / s).glob("*.json")]
    untracked = [str(f.relative_to(REPO)) for f in read if str(f.relative_to(REPO)) not in tracked]
    assert not untracked, f"the README table reads files a clone lacks: {untracked[:5]}"


def test_readme_table_needs_neither_trainer_nor_benches():
    """The table rebuilds from results alone: its module imports no part of drat.train or drat.bench."""
    import ast

    tree = ast.parse(Path(readme_table.__file__).read_text(encoding="utf-8"))
    mods = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in mods if m.lstrip(".").startswith(("train", "bench", "drat.train", "drat.bench"))}


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; at most {MAX_README_LINES}"


def _ignored(path: Path) -> bool:
    """Whether git ignores `path` (a pipeline output): a fresh clone would not have it."""
    proc = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, capture_output=True)
    return proc.returncode == 0


@pytest.mark.parametrize("source,target", relative_links())
def test_relative_link_reaches_a_file_of_the_repository(source, target):
    path = (REPO / source).parent / target.split("#", 1)[0]
    assert path.exists(), f"{source} links to {target}, which does not exist"
    assert REPO in path.resolve().parents, f"{source} links to {target}, outside the repository"
    assert not _ignored(path), f"{source} links to {target}, which git ignores (not in a clone)"
