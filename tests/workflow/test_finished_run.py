"""What a user does next to a finished run, as the docs say, through the real
snakemake CLI on the session's reference run (never modified: its results are
copied or reached through a link).

- The README's report command builds the zip, figures inside (issue 33,
  item 12: an `.html` report fails, the dashboards are a directory output).
- A checkout and a working directory whose paths hold a space: generation,
  a shell rule, still runs (issue 33, item 11: its interpreter was unquoted).
- Its logs hold nothing that reads like an error (issue 27, item 6).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import wfrun

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return wfrun.reference_run(tmp_path_factory.getbasetemp())


def test_readme_report_command_builds_the_zip(reference, tmp_path):
    readme = (wfrun.REPO / "README.md").read_text()
    (line,) = re.findall(r"`(snakemake --report [^`]+)`", readme)
    cmd = shlex.split(line)
    assert cmd[:2] == ["snakemake", "--report"] and cmd[2].endswith(".zip")
    report, targets = cmd[2], cmd[3:]
    # A working dir that reads the reference's results through a link, with
    # its records: the report is written here, not into the shared run.
    work = wfrun.workdir(tmp_path / "w")
    run = wfrun.run_name(reference)
    (work / "results").mkdir()
    (work / "results" / run).symlink_to(wfrun.results(reference))
    shutil.copytree(
        reference / ".snakemake" / "metadata", work / ".snakemake" / "metadata"
    )
    proc = subprocess.run(
        wfrun.command(work, targets, extra=["--report", report]),
        cwd=work, env=wfrun.env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = zipfile.ZipFile(work / report).namelist()
    figures = sorted(
        p.name for p in (wfrun.results(reference) / "figures").glob("*.png")
    )
    assert len(figures) >= 8, figures
    for name in figures:
        assert any(n.endswith(f"/{name}") for n in names), f"{name} not in {report}"
    # the dashboard site, whole (report(directory, htmlindex=...))
    (site,) = [n for n in names if n.endswith("/index.html") and "/raw/" in n]
    assert any(
        n.startswith(site.removesuffix("index.html") + "features/") for n in names
    )


def _spaced_python(folder: Path) -> Path:
    """This interpreter reached through `folder` (a path with a space): its
    environment linked whole (a venv finds its packages beside its
    interpreter), or the interpreter alone."""
    exe = Path(sys.executable)
    if sys.prefix != sys.base_prefix and exe.is_relative_to(sys.prefix):
        (folder / "env").symlink_to(sys.prefix, target_is_directory=True)
        return folder / "env" / exe.relative_to(sys.prefix)
    (folder / "bin").mkdir()
    (folder / "bin" / exe.name).symlink_to(exe)
    return folder / "bin" / exe.name


def test_generation_runs_from_a_checkout_path_with_a_space(reference, tmp_path):
    spaced = tmp_path / "my checkout"
    spaced.mkdir()
    checkout = spaced / "lorascope"
    checkout.symlink_to(wfrun.REPO, target_is_directory=True)
    python = _spaced_python(spaced)
    work = wfrun.clone(reference, spaced / "work dir", ["toy", "data/bench"])
    target = wfrun.target("eval/generations/base", work)
    cmd = wfrun.command(work, [target], extra=["--printshellcmds"], wrap=False)
    cmd = [str(python), *(a.replace(str(wfrun.REPO), str(checkout)) for a in cmd[1:])]
    cmd = wfrun.dies_with_this_process(cmd)
    env = wfrun.env()
    env["PATH"] = os.pathsep.join([str(python.parent), env["PATH"]])
    env["LORASCOPE_WARM_JOBS"] = "1"  # one job: warm only when asked for
    proc = subprocess.run(
        cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert wfrun.job_stats(proc.stderr) == {"eval_generate": 1}, out[-3000:]
    # The interpreter's path, space included, reached the shell as one word
    # (in a local run through the warm interpreter's client).
    client = "-m lorascope.workflow.warm.client"
    assert f"{shlex.quote(str(python))} {client} -m lorascope.evaluation" in out
    gens = wfrun.results(work) / "eval" / "generations" / "base" / "base"
    assert sorted(p.name for p in gens.glob("*.parquet")) == ["toy_add3.parquet"]
    # Training's launcher (one process here) quotes the interpreter too.
    train = wfrun.target("train/rank1/adapter", work)
    cmd[cmd.index(target)] = train
    cmd += ["--forcerun", "train_rank1", "-n"]
    dry = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert f"{shlex.quote(str(python))} -m lorascope.train" in dry.stdout + dry.stderr


# What reads like an error in a log: a traceback, an ERROR line, or a warning
# our own code triggers (a library's deprecation notices are theirs to fix).
NOISE = re.compile(r"Traceback|\bERROR\b|lorascope/\S+\.py:\d+: \w*Warning")


def test_a_normal_runs_logs_hold_nothing_that_reads_like_an_error(reference):
    """Every rule log of the reference run (every rule of the micro DAG):
    a user scanning them after a good run must not find an error. One was
    a torch UserWarning (a read-only polars array) in ground_truth's log."""
    logs = sorted((reference / "logs").rglob("*.log"))
    assert len(logs) > 50, logs
    noisy = [
        f"{log.relative_to(reference)}: {line}"
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if NOISE.search(line)
    ]
    assert not noisy, "\n".join(noisy[:20])


def test_jobs_ran_in_the_warm_interpreter(reference):
    """The reference run is a local run: every CPU job forked from the warm
    interpreter (lorascope.workflow.warm), none fell back to a fresh one."""
    said = Path(f"{reference}.stderr").read_text()
    assert "jobs start in a warm interpreter" in said
    assert "start their own interpreters" not in said  # the server went away
    assert "starts its own interpreter" not in said  # a script job's env differed
    cold = [  # a shell rule's job whose environment differed
        str(log.relative_to(reference))
        for log in (reference / "logs").rglob("*.log")
        if "warm interpreter:" in log.read_text(errors="replace")
    ]
    assert not cold, cold
