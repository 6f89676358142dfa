"""workflow/scripts/device_drive.sh: every file a call writes under results/ comes back, and only
those (session 6 lost two finished benches to a fixed list of folders)."""

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_driver_packs_what_the_call_wrote_under_results(tmp_path):
    work, out, bin_ = tmp_path / "work", tmp_path / "out", tmp_path / "bin"
    (work / "workflow/scripts").mkdir(parents=True)
    for f in ("device_env.sh", "device_drive.sh"):
        shutil.copy(ROOT / "workflow/scripts" / f, work / "workflow/scripts" / f)
    (work / "results/paper/bench/small").mkdir(parents=True)
    (work / "results/paper/bench/small/frontier.json").write_text("carried, older than the call")
    old = time.time() - 60
    os.utime(work / "results/paper/bench/small/frontier.json", (old, old))
    out.mkdir()
    bin_.mkdir()
    (bin_ / "nvidia-smi").write_text("#!/bin/sh\necho fake GPU\n")
    (bin_ / "nvidia-smi").chmod(0o755)
    (work / "cmds.txt").write_text(
        "mkdir -p results/paper/bench/medium && echo '{}' > results/paper/bench/medium/frontier.json\n"
        "\n"
        "mkdir -p results/paper/train/r/checkpoints && echo x > results/paper/train/r/checkpoints/c.pt\n"
        "mkdir -p results/bench && echo row > results/bench/new.csv\n")
    env = {**os.environ, "OUT": str(out), "PATH": f"{bin_}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "workflow/scripts/device_drive.sh", "0" * 40, "120", "cmds.txt"], cwd=work,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out / "results.tgz") as tar:
        packed = sorted(tar.getnames())
    assert packed == ["results/bench/new.csv", "results/paper/bench/medium/frontier.json"]
    assert "packed 2 files" in r.stdout


def test_drift_probe_writes_every_condition_and_strategy(tmp_path):
    """workflow/scripts/drift_probe.py (a device diagnostic) runs end to end on the CPU and keeps
    one row per round × condition × strategy, with per-step host and device times."""
    import json
    import sys

    out = tmp_path / "drift"
    subprocess.run([sys.executable, str(ROOT / "workflow/scripts/drift_probe.py"), "--size", "tiny",
                    "--seq-len", "16", "--batch-size", "2", "--vocab-size", "128", "--layers", "2",
                    "--steps", "2", "--warmup", "1", "--rounds", "1", "--device", "cpu", "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    rows = json.loads((out / "drift.json").read_text())["rows"]
    strategies = ("none", "full", "plan-store-block-outputs")
    assert {(r["condition"], r["strategy"]) for r in rows} == {
        (c, s) for c in ("gc-on", "gc-off", "synced") for s in strategies}
    assert all(len(r["host_ms"]) == len(r["gpu_ms"]) == 2 and r["gc_passes"] >= 0 for r in rows)
