"""`python -m drat.analysis.jobs`: a snakemake dry run becomes a bash script of the same jobs."""
# ruff: noqa: E501  (dry-run lines are long by nature)

import subprocess
import sys

import pytest

from drat.analysis.jobs import jobs, to_script

DRY = """
rule profile:
    output: results/paper/profile/small/none.json
    log: results/paper/logs/profile/small/none.log
    jobid: 0
Shell command: drat profile --size small --point none --out results/paper/profile/small/none.json > results/paper/logs/profile/small/none.log 2>&1

rule bench:
    output: results/paper/bench/small/frontier.json, results/paper/bench/small/frontier.csv
    log: results/paper/logs/bench/small.log
Shell command: OMP_NUM_THREADS=8 drat bench frontier --size small --out results/paper/bench/small > results/paper/logs/bench/small.log 2>&1

localrule all:
    input: results/paper/profile/small/none.json
    jobid: 9
Shell command: None
"""


def test_jobs_are_parsed_with_outputs_logs_and_commands():
    js = jobs(DRY)
    assert [j["output"][0] for j in js] == ["results/paper/profile/small/none.json",
                                           "results/paper/bench/small/frontier.json"]  # not `all`
    assert js[1]["output"][1] == "results/paper/bench/small/frontier.csv"
    assert js[0]["log"] == ["results/paper/logs/profile/small/none.log"]
    assert js[1]["cmd"].startswith("OMP_NUM_THREADS=8 drat bench frontier")


def test_script_keeps_commands_verbatim_makes_folders_and_survives_failures(tmp_path):
    script = to_script(jobs(DRY))
    lines = script.splitlines()
    # output-path order: bench before profile; each command copied exactly
    cmds = [ln for ln in lines if ln.startswith("  ( ")]
    assert "drat bench frontier" in cmds[0] and "drat profile --size small --point none" in cmds[1]
    assert "  mkdir -p results/paper/bench/small results/paper/logs/bench" in lines
    # a failing job is reported and the rest still run
    fake = "\n".join([
        "rule a:", "    output: out/a.txt", "    log: logs/a.log", "Shell command: false",
        "rule b:", "    output: out/b.txt", "    log: logs/b.log", "Shell command: echo ok > out/b.txt",
    ])
    (tmp_path / "jobs.sh").write_text(to_script(jobs(fake)))
    r = subprocess.run(["bash", "jobs.sh"], cwd=tmp_path, capture_output=True, text=True)
    assert "FAILED: out/a.txt" in r.stdout and "jobs failed: 1," in r.stdout
    assert (tmp_path / "out" / "b.txt").read_text() == "ok\n"


@pytest.mark.slow
def test_empty_dry_run_or_an_argument_is_an_error():
    r = subprocess.run([sys.executable, "-m", "drat.analysis.jobs"], input="nothing", capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stdout == "" and "snakemake with -n -p" in r.stderr
    r = subprocess.run([sys.executable, "-m", "drat.analysis.jobs", "jobs.sh"], input=DRY, capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stdout == "" and "usage:" in r.stderr


@pytest.mark.slow
def test_module_writes_the_script_to_stdout():
    r = subprocess.run([sys.executable, "-m", "drat.analysis.jobs"], input=DRY, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == to_script(jobs(DRY))


FAKE3 = "\n".join([
    "rule a:", "    output: out/a.txt", "    log: logs/a.log", "Shell command: echo a >> out/a.txt",
    "rule b:", "    output: out/b.txt, out/b2.txt", "    log: logs/b.log",
    "Shell command: echo b >> out/b.txt; echo b2 >> out/b2.txt",
    "rule c:", "    output: out/c.txt", "    log: logs/c.log", "Shell command: sleep 1; echo c > out/c.txt",
])


def test_rerun_skips_finished_jobs_and_replaces_stale_outputs(tmp_path):
    (tmp_path / "jobs.sh").write_text(to_script(jobs(FAKE3)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a\n")          # finished earlier: kept, not rerun
    (tmp_path / "out" / "b.txt").write_text("stale\n")      # half a job: removed, then rerun
    r = subprocess.run(["bash", "jobs.sh"], cwd=tmp_path, capture_output=True, text=True)
    assert "jobs failed: 0, skipped (done): 1, not started (time): 0" in r.stdout
    assert (tmp_path / "out" / "a.txt").read_text() == "a\n"
    assert (tmp_path / "out" / "b.txt").read_text() == "b\n"   # appended to nothing: stale was removed
    assert (tmp_path / "out" / "c.txt").read_text() == "c\n"


def test_stop_after_leaves_later_jobs_unstarted(tmp_path):
    (tmp_path / "jobs.sh").write_text(to_script(jobs(FAKE3)))
    env = {"PATH": "/usr/bin:/bin", "JOBS_STOP_AFTER_S": "1"}
    fake = FAKE3.replace("echo a >> out/a.txt", "sleep 1.2; echo a >> out/a.txt")
    (tmp_path / "jobs.sh").write_text(to_script(jobs(fake)))
    r = subprocess.run(["bash", "jobs.sh"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "not started (time): 2" in r.stdout, r.stdout
    assert (tmp_path / "out" / "a.txt").exists() and not (tmp_path / "out" / "b.txt").exists()


@pytest.mark.slow
def test_a_job_cut_off_mid_way_is_rerun_not_taken_as_done(tmp_path):
    """A bench rewrites its outputs after every row: killed by a timeout, it leaves complete-
    looking files. The `.incomplete` marker makes the next call rerun it."""
    fake = "\n".join(["rule a:", "    output: out/a.txt", "    log: logs/a.log",
                      "Shell command: for i in 1 2 3 4 5 6; do echo row$i >> out/a.txt; sleep 0.4; done"])
    (tmp_path / "jobs.sh").write_text(to_script(jobs(fake)))
    r = subprocess.run(["timeout", "1", "bash", "jobs.sh"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 124 and (tmp_path / "out" / "a.txt.incomplete").exists()
    r = subprocess.run(["bash", "jobs.sh"], cwd=tmp_path, capture_output=True, text=True)
    assert "skipped (done): 0" in r.stdout
    assert (tmp_path / "out" / "a.txt").read_text().split() == [f"row{i}" for i in range(1, 7)]
    assert not (tmp_path / "out" / "a.txt.incomplete").exists()
    r = subprocess.run(["bash", "jobs.sh"], cwd=tmp_path, capture_output=True, text=True)
    assert "skipped (done): 1" in r.stdout


def test_stop_after_must_be_whole_seconds(tmp_path):
    (tmp_path / "jobs.sh").write_text(to_script(jobs(FAKE3)))
    r = subprocess.run(["bash", "jobs.sh"], cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "JOBS_STOP_AFTER_S": "4.5"})
    assert r.returncode == 2 and "whole seconds" in r.stderr
