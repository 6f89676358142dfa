"""Provenance in every result file: the commit (or the one a history-less copy is told), and a
hash of the package's sources that names the mechanism a result ran."""

import hashlib
import shutil

from drat import provenance as prov


def test_provenance_names_commit_device_and_source_hash(monkeypatch):
    monkeypatch.setenv("DRAT_GIT_COMMIT", "a" * 40)
    monkeypatch.setenv("DRAT_GIT_DIRTY", "1")
    p = prov.provenance("cpu")
    assert p["git_commit"] == "a" * 40 and p["git_dirty"] is True
    assert p["device"].startswith("cpu") and p["torch_version"]
    assert len(p["source_sha256"]) == 64 and int(p["source_sha256"], 16) >= 0
    monkeypatch.setenv("DRAT_GIT_COMMIT", "not-a-commit")  # ignored: git (or 'unknown') answers
    assert prov.provenance("cpu")["git_commit"] != "not-a-commit"


def test_source_hash_covers_every_module_and_only_the_sources(tmp_path, monkeypatch):
    """The hash is over path and bytes of each .py file under the package but drat/analysis: a
    changed line, a renamed file or a new module changes it; a cache file or analysis does not."""
    pkg = tmp_path / "drat"
    shutil.copytree(prov._REPO / "drat", pkg, ignore=shutil.ignore_patterns("__pycache__"))

    def digest():
        monkeypatch.setattr(prov, "__file__", str(pkg / "provenance.py"))
        prov.source_sha256.cache_clear()
        try:
            return prov.source_sha256()
        finally:
            prov.source_sha256.cache_clear()

    base = digest()
    monkeypatch.undo()
    assert base == prov.source_sha256()  # the copy hashes like the package itself
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__" / "x.cpython.py").write_text("cache")
    assert digest() == base
    (pkg / "costs.py").write_text((pkg / "costs.py").read_text() + "\n# a change\n")
    changed = digest()
    assert changed != base
    (pkg / "extra.py").write_text("")
    extra = digest()
    assert extra not in (base, changed)
    # the analysis only reads results: changing it leaves the mechanism's hash alone
    (pkg / "analysis" / "cells.py").write_text((pkg / "analysis" / "cells.py").read_text() + "\n# x\n")
    assert digest() == extra
    # the definition, spelled out: sha256 over "<relative path>\0<bytes>\0" in sorted path order
    h = hashlib.sha256()
    for f in sorted(p for p in pkg.rglob("*.py")
                    if "__pycache__" not in p.parts and p.relative_to(pkg).parts[0] != "analysis"):
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    assert digest() == h.hexdigest()
