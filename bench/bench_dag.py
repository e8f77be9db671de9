"""Benchmark: the embedded DAG (`snakemake --cores 2 all`, config/config.yaml)
from scratch in a temp workdir, as `make run` does after setup.

Prints the wall time, total CPU (snakemake + every job), the critical path
(the chain of jobs that bounded the wall time: from the last job to finish,
back through the input whose job finished last), the longest chain by CPU
seconds (what bounds the wall time on an idle machine with enough cores), a
2-core list schedule of the jobs' CPU seconds (an idle-machine estimate that a
busy machine's wall time cannot give), and the start-up share.

How each number is measured:
- per job: bench/dagprobe/sitecustomize.py, first on the jobs' PYTHONPATH,
  records each Python process's own CPU and its waited children's (getrusage)
  and its start/end times; jobs are matched to Snakemake's log by rule and
  outputs (a `script:` job) or by outputs on the command line (a `shell:` job).
- start-up: each job's start-up is replayed in a fresh interpreter with its
  work replaced by nothing: the same interpreter, sys.path and environment
  importing every module the job had imported by its exit, in the order it
  imported them (so `interpreter + imports`, lazy imports included); its CPU is
  the job's start-up CPU. Identical module sets are replayed once. A job
  forked from the warm interpreter (lorascope.workflow.warm) is replayed
  from what it inherited: only the imports it added are timed; the warm
  interpreter's own CPU (its preload) is reported beside and counted in the
  start-up share.
- total CPU: getrusage of the snakemake process tree (the bench's children).

CPU seconds are the primary numbers: on a shared machine a neighbour's load
inflates wall time but not (much) CPU time. With --vs REV the same is done for
git revision REV (`git archive` into a temp dir, this checkout's .venv and
.venv-vllm linked), in the same invocation, and the ratios printed.

    python bench/bench_dag.py                      # this checkout
    python bench/bench_dag.py --vs HEAD~3 --json /tmp/dag.json
    python bench/bench_dag.py --no-replay         # wall and CPU only: minutes faster
    LORASCOPE_WARM_JOBS=0 python bench/bench_dag.py   # every job a fresh interpreter
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "dagprobe"
SHELL_MAINS = ("train/__main__.py", "evaluation/__main__.py")


def checkout(rev: str, into: Path) -> Path:
    """Revision `rev` of this repo as a plain tree (no worktree metadata)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for venv in (".venv", ".venv-vllm"):
        if (REPO / venv).exists():
            (into / venv).symlink_to((REPO / venv).resolve())
    return into


def run_dag(repo: Path, work: Path, cores: int, targets=("all",)) -> dict:
    """One run of `snakemake all` from scratch; wall, CPU, log, probe records."""
    work.mkdir(parents=True)
    for name in ("config", "resources"):
        (work / name).symlink_to(repo / name)
    probe_out = work / ".dagprobe"
    probe_out.mkdir()
    py = repo / ".venv" / "bin" / "python"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(py.parent), env["PATH"]])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROBE), env.get("PYTHONPATH")) if p
    )
    env["LORASCOPE_DAGPROBE"] = str(probe_out)
    cmd = [str(py), "-m", "snakemake", *targets, "--snakefile", str(repo / "Snakefile"),
           "--cores", str(cores), "--workflow-profile", "none"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (work / "snakemake.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed in {work}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (work / "run.json").write_text(json.dumps({"wall": wall, "cpu": cpu, "env": env}))
    return load_run(work)


def load_run(work: Path) -> dict:
    """A finished run dir (run_dag's, or kept with --keep) for `analyse`.
    Without run.json (a bench that stopped before writing it): the wall time
    is snakemake's own process's, the CPU the sum over every Python process."""
    records = [
        json.loads(p.read_text()) for p in sorted((work / ".dagprobe").glob("*.json"))
    ]
    meta = work / "run.json"
    if meta.is_file():
        run = json.loads(meta.read_text())
    else:
        main = [r for r in records if r["argv"][0].endswith("snakemake/__main__.py")]
        env = dict(os.environ, PYTHONPATH=str(PROBE))  # replays set sys.path
        run = {"wall": main[0]["end"] - main[0]["start"],
               "cpu": sum(r["cpu"] for r in records), "env": env}  # fmt: skip
    log = (work / "snakemake.log").read_text()
    return {**run, "log": log, "records": records, "work": str(work)}


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def parse_log(log: str) -> dict[int, dict]:
    """jobid -> rule, inputs, outputs, start/finish (1 s resolution) from the
    run's stderr."""
    jobs: dict[int, dict] = {}
    stamp = None
    current: dict | None = None
    for line in log.splitlines():
        m = _STAMP.match(line.strip())
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            current = None
            continue
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            current = {"rule": m.group(1), "input": [], "output": [], "start": stamp}
            continue
        m = re.match(r"^\s+(input|output|jobid): (.*)$", line)
        if m and current is not None:
            key, val = m.groups()
            if key == "jobid":
                jobs[int(val)] = current
            else:
                current[key] = [v.strip() for v in val.split(", ")]
            continue
        m = re.match(r"^Finished jobid: (\d+)", line)
        if m and int(m.group(1)) in jobs:
            jobs[int(m.group(1))]["finish"] = stamp
    return jobs


def attach_records(jobs: dict[int, dict], records: list[dict]) -> list[dict]:
    """Give each job its probe record (the job's own process); returns the
    records that are no job's (snakemake itself, helpers)."""
    by_out = {(j["rule"], tuple(j["output"])): j for j in jobs.values()}
    rest = []
    for rec in records:
        job = None
        if rec["job"] is not None:
            job = by_out.get((rec["job"]["rule"], tuple(rec["job"]["output"])))
        elif rec["argv"][0].endswith(SHELL_MAINS) and "--out" in rec["argv"]:
            # a `shell:` job (python -m ...): its --out is an output or its parent
            out = os.path.normpath(rec["argv"][rec["argv"].index("--out") + 1])
            for j in jobs.values():
                outs = set(j["output"]) | {os.path.dirname(o) for o in j["output"]}
                if out in {os.path.normpath(o) for o in outs}:
                    job = j
        if job is None:
            rest.append(rec)
        else:
            job["record"] = rec
    return rest


def depends(jobs: dict[int, dict]) -> dict[int, list[int]]:
    """jobid -> jobids whose outputs it reads."""
    made = {o: k for k, j in jobs.items() for o in j["output"]}
    deps = {}
    for k, j in jobs.items():
        found = set()
        for i in j["input"]:
            for o, src in made.items():
                if i == o or i.startswith(o.rstrip("/") + "/"):
                    found.add(src)
        deps[k] = sorted(found - {k})
    return deps


def span(job: dict) -> tuple[float, float]:
    rec = job.get("record")
    if rec is not None:
        return rec["start"], rec["end"]
    return job["start"], job.get("finish", job["start"])


def job_cpu(job: dict) -> float:
    rec = job.get("record")
    return rec["cpu"] + rec["children_cpu"] if rec else 0.0


def observed_chain(jobs, deps) -> list[int]:
    """From the job that finished last back through the dependency that
    finished last: the chain that bounded this run's wall time."""
    k = max(jobs, key=lambda i: span(jobs[i])[1])
    chain = [k]
    while deps[k]:
        k = max(deps[k], key=lambda i: span(jobs[i])[1])
        chain.append(k)
    return chain[::-1]


def longest_chain(jobs, deps, weight) -> tuple[float, list[int]]:
    """The dependency chain with the most `weight` seconds."""
    best: dict[int, tuple[float, list[int]]] = {}

    def visit(k):
        if k not in best:
            prev = max((visit(d) for d in deps[k]), default=(0.0, []))
            best[k] = (prev[0] + weight(jobs[k]), prev[1] + [k])
        return best[k]

    return max((visit(k) for k in jobs), key=lambda t: t[0])


def schedule(jobs, deps, weight, cores: int) -> float:
    """Makespan of a greedy list schedule on `cores` cores, each job taking
    `weight` seconds, longest remaining chain first (an idle-machine model)."""
    tail: dict[int, float] = {}
    users = {k: [u for u in jobs if k in deps[u]] for k in jobs}

    def rest(k):
        if k not in tail:
            tail[k] = weight(jobs[k]) + max((rest(u) for u in users[k]), default=0)
        return tail[k]

    done_at: dict[int, float] = {}
    free = [0.0] * cores
    pending = set(jobs)
    while pending:
        ready = [k for k in pending if all(d in done_at for d in deps[k])]
        k = max(ready, key=rest)
        core = min(range(cores), key=lambda c: free[c])
        start = max([free[core]] + [done_at[d] for d in deps[k]])
        done_at[k] = free[core] = start + weight(jobs[k])
        pending.remove(k)
    return max(done_at.values())


_REPLAY = """
import importlib, json, resource, sys
paths, inherited, modules = json.load(sys.stdin)
sys.path[:] = paths

def load(names):
    for name in names:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except BaseException:
                pass

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

load(inherited)
t0 = cpu()
load(modules)
print(json.dumps(cpu() - t0))
"""


def replay_startup(jobs: dict[int, dict], env: dict, cwd: str) -> None:
    """Each job's start-up CPU: a fresh interpreter importing what it imported
    (a job forked from the warm interpreter: what it imported beyond what it
    inherited, timed after importing that)."""
    clean = {k: v for k, v in env.items() if k != "LORASCOPE_DAGPROBE"}
    clean["PYTHONPATH"] = os.pathsep.join(
        p for p in clean["PYTHONPATH"].split(os.pathsep) if p != str(PROBE)
    )
    seen: dict[tuple, float] = {}
    for job in jobs.values():
        rec = job.get("record")
        if rec is None:
            continue
        inherited = rec.get("inherited", [])
        key = (rec["executable"], tuple(rec["modules"]), tuple(inherited))
        if key not in seen:
            # the module list goes on stdin (vLLM's is too long for argv)
            todo = json.dumps([rec["sys_path"], inherited, rec["modules"]])
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run([rec["executable"], "-c", _REPLAY], env=clean,
                                 cwd=cwd, input=todo, text=True, capture_output=True,
                                 timeout=300)  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            whole = (after.ru_utime - before.ru_utime) + (
                after.ru_stime - before.ru_stime
            )
            # a cold job paid the interpreter too; a forked one only its imports
            seen[key] = json.loads(out.stdout) if inherited else whole
        job["startup"] = min(seen[key], job_cpu(job))


def analyse(run: dict, cores: int, replay: bool = True) -> dict:
    """The numbers `report` prints; replay=False skips the start-up replay
    (minutes): every start-up column is then 0."""
    jobs = {k: j for k, j in parse_log(run["log"]).items() if j["rule"] != "all"}
    others = attach_records(jobs, run["records"])
    deps = depends(jobs)
    if replay:
        replay_startup(jobs, run["env"], run["work"])
    missing = [
        f"{j['rule']} {j['output'][0]}" for j in jobs.values() if "record" not in j
    ]
    job_total = sum(job_cpu(j) for j in jobs.values())
    startup = sum(j.get("startup", 0.0) for j in jobs.values())
    snake = [r for r in others if r["argv"][0].endswith("snakemake/__main__.py")]
    # the warm interpreter (lorascope.workflow.warm.server): its preload is
    # start-up the script jobs share
    warm = [r for r in others if r["argv"][0].endswith("warm/server.py")]
    cp_cpu, cp_chain = longest_chain(jobs, deps, job_cpu)
    cp_work, _ = longest_chain(jobs, deps, lambda j: job_cpu(j) - j.get("startup", 0))
    heavy_startup = sum(
        1 for j in jobs.values() if j.get("startup", 0) > 0.5 * max(job_cpu(j), 1e-9)
    )
    return {
        "wall": run["wall"],
        "cpu_total": run["cpu"],
        "cpu_jobs": job_total,
        "cpu_snakemake": sum(r["cpu"] for r in snake),
        "cpu_warm": sum(r["cpu"] for r in warm),
        "cpu_startup": startup,
        "replayed": replay,
        "jobs": len(jobs),
        "jobs_mostly_startup": heavy_startup,
        "missing_records": missing,
        "observed_chain": [
            (
                jobs[k]["rule"],
                span(jobs[k])[1] - span(jobs[k])[0],
                job_cpu(jobs[k]),
                jobs[k].get("startup", 0.0),
            )
            for k in observed_chain(jobs, deps)
        ],  # fmt: skip
        "cpu_chain": [
            (jobs[k]["rule"], job_cpu(jobs[k]), jobs[k].get("startup", 0.0))
            for k in cp_chain
        ],
        "cpu_chain_s": cp_cpu,
        "cpu_chain_free_startup_s": cp_work,
        "sched_cpu_s": schedule(jobs, deps, job_cpu, cores),
        "sched_free_startup_s": schedule(
            jobs, deps, lambda j: job_cpu(j) - j.get("startup", 0), cores
        ),
        "per_rule": per_rule(jobs),
    }


def per_rule(jobs) -> dict[str, list[float]]:
    """rule -> [jobs, CPU s, start-up CPU s]."""
    out: dict[str, list[float]] = {}
    for j in jobs.values():
        row = out.setdefault(j["rule"], [0, 0.0, 0.0])
        row[0] += 1
        row[1] += job_cpu(j)
        row[2] += j.get("startup", 0.0)
    return out


def report(name: str, r: dict) -> None:
    print(f"\n== {name}: {r['jobs']} jobs")
    print(
        f"  wall                        {r['wall']:8.1f} s (machine load inflates it)"
    )
    print(f"  CPU total (snakemake tree)  {r['cpu_total']:8.1f} s")
    print(f"  CPU of jobs                 {r['cpu_jobs']:8.1f} s")
    print(f"  CPU of snakemake itself     {r['cpu_snakemake']:8.1f} s")
    warm = r.get("cpu_warm", 0.0)
    print(f"  CPU of the warm interpreter {warm:8.1f} s (its preload and forks)")
    share = (r["cpu_startup"] + warm) / max(r["cpu_jobs"] + warm, 1e-9)
    if r.get("replayed", True):
        print(
            f"  start-up CPU (replayed)     {r['cpu_startup']:8.1f} s "
            f"= {share:.0%} of job CPU (the warm interpreter's counted as start-up)"
        )
    else:
        print("  start-up CPU                not replayed (--no-replay): columns 0")
    if r.get("replayed", True):
        n, total = r["jobs_mostly_startup"], r["jobs"]
        print(f"  jobs > half start-up        {n:8d} of {total}")
    print(f"  longest chain, CPU          {r['cpu_chain_s']:8.1f} s "
          f"(free start-up: {r['cpu_chain_free_startup_s']:.1f} s)")  # fmt: skip
    print(f"  2-core schedule of job CPU  {r['sched_cpu_s']:8.1f} s "
          f"(free start-up: {r['sched_free_startup_s']:.1f} s)")  # fmt: skip
    print("  critical path (observed: wall s / CPU s / start-up CPU s):")
    for rule, wall, cpu, st in r["observed_chain"]:
        print(f"    {rule:24s} {wall:7.1f} {cpu:7.1f} {st:7.1f}")
    print("  longest chain by CPU (CPU s / start-up CPU s):")
    for rule, cpu, st in r["cpu_chain"]:
        print(f"    {rule:24s} {cpu:7.1f} {st:7.1f}")
    print("  per rule (jobs, CPU s, start-up CPU s):")
    for rule, (n, cpu, st) in sorted(r["per_rule"].items(), key=lambda t: -t[1][1]):
        print(f"    {rule:24s} {n:3d} {cpu:7.1f} {st:7.1f}")
    if r["missing_records"]:
        print(
            f"  no probe record (CPU counted only in the total): {r['missing_records']}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vs", metavar="REV", help="also run git revision REV")
    ap.add_argument("--this", metavar="REV", help="run REV instead of the work tree")
    ap.add_argument("--targets", nargs="+", default=["all"], help="default: all")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--no-replay", action="store_true",
                    help="no start-up replay (saves minutes)")  # fmt: skip
    ap.add_argument("--analyse", type=Path, nargs="+", metavar="RUN_DIR",
                    help="only analyse kept run dirs (no new run)")  # fmt: skip
    args = ap.parse_args()
    if args.analyse:
        results = {
            str(d): analyse(load_run(d), args.cores, not args.no_replay)
            for d in args.analyse
        }
        for name, r in results.items():
            report(name, r)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_dag_"))
    results = {}
    runs = [(args.vs, "vs")] if args.vs else []
    runs.append((args.this, "this"))
    for rev, name in runs:
        repo = checkout(rev, tmp / f"repo_{name}") if rev else REPO
        run = run_dag(repo, tmp / f"run_{name}", args.cores, args.targets)
        results[rev if name == "vs" else "this"] = analyse(
            run, args.cores, not args.no_replay
        )
    for name, r in results.items():
        report(name, r)
    if args.vs:
        a, b = results["this"], results[args.vs]
        print(f"\n== this / {args.vs}")
        for key in ("cpu_total", "cpu_jobs", "cpu_startup", "cpu_chain_s",
                    "sched_cpu_s", "wall"):  # fmt: skip
            ratio = f"{a[key] / b[key]:.3f}" if b[key] else "n/a"
            print(f"  {key:14s} {a[key]:7.1f} / {b[key]:7.1f} = {ratio}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    else:
        print(f"\nrun dirs kept in {tmp}")


if __name__ == "__main__":
    main()
