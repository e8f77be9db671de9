"""Mutation testing of the core computations against their fast tests.

The driver behind `make mutation` (never run by CI: a full pass takes tens of
minutes). Each session mutates one module with mutmut 3 and runs, against
each mutant, only the tests of that module's own unit file that execute the
mutated function (mutmut records which tests call which function in one
stats pass, then forks one child per mutant from a process that has already
imported torch, so a mutant costs the time of its tests, not of an
interpreter start).

mutmut copies `src/` and `tests/` into `mutants/` and puts `mutants/src`
first on sys.path; tests/conftest.py inserts `<its repo>/src`, which in the
copy is `mutants/src` too, so the tests import the mutated copy and never
the checkout's own modules. Each session runs in its own scratch directory
(symlinks to the checkout, a `setup.cfg` naming the module and its tests),
so sessions never share mutmut's state and the checkout is never written.

Run as `python tests/support/mutation.py [SESSION ...]` with an interpreter
that has mutmut and the project's packages (the Makefile builds one); it
prints the table `module | mutants | killed | survived | no tests | timeout |
kill rate` and writes it, with the diff of every surviving mutant, to
`<out>/report.md`. Kill rate = (killed + timeout) / mutants: a mutant that
no test runs counts as a survivor. `--recheck` reuses each session's scratch
dir: only the mutants of changed functions and the earlier survivors run
(report in `<out>/report-recheck.md`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What the unit tests read besides src/ and tests/ (schemas, shipped toy
# files, configs); linked into each scratch dir and copied by mutmut.
ALSO_COPY = ["resources", "config", "workflow", "pyproject.toml"]


@dataclass(frozen=True)
class Session:
    module: str  # path under src/lorascope
    tests: tuple[str, ...]  # pytest selection, relative to the repo
    functions: tuple[str, ...] = ()  # mutate only these (default: all)
    # Tests that start Python in another working directory: there mutmut's
    # trampolines find no config and the stats pass fails.
    deselect: tuple[str, ...] = ()


SESSIONS: dict[str, Session] = {
    "grading": Session("core/grading.py", ("tests/unit/test_grading.py",)),
    # The answer logic only. MathChecker and _serve are process plumbing: a
    # mutant there breaks the child and each test then waits out its time
    # limit (minutes a mutant), and _serve runs only in the child, where
    # mutmut records no test for it. The time-limit tests cover them.
    "math_answers": Session(
        "core/math_answers.py",
        ("tests/unit/test_grading.py",),
        functions=("normalise_text", "_bare_expression", "check_math"),
    ),
    "secrets": Session(
        "core/secrets.py",
        ("tests/unit/test_secrets.py",),
        deselect=("test_digest_is_stable_across_processes_and_salted",),
    ),
    "dashboards_escaping": Session(
        "dashboards/build.py",
        ("tests/unit/test_dashboards.py",),
        functions=("_token_text", "context_view", "_env", "_fmt"),
    ),
    "tables": Session("evaluation/tables.py", ("tests/unit/test_tables.py",)),
    "surgery": Session("adapters/surgery.py", ("tests/unit/test_surgery.py",)),
    "chat": Session("core/chat.py", ("tests/unit/test_chat_data.py",)),
    "sft_data": Session(
        "data/sft.py",
        ("tests/unit/test_sft_rows.py", "tests/unit/test_chat_data.py"),
    ),
    "kl": Session("ablation/kl.py", ("tests/unit/test_ablation.py",)),
    # test_devices.py: the edits follow the activations' device (meta model).
    "scalar_control": Session(
        "ablation/scalar_control.py",
        ("tests/unit/test_ablation.py", "tests/unit/test_devices.py"),
    ),
    "codeversion": Session("workflow/codeversion.py", ("tests/unit/test_wiring.py",)),
    "autointerp_cache": Session(
        "autointerp/cache.py",
        ("tests/unit/test_autointerp_clients.py", "tests/unit/test_secrets.py"),
    ),
    "autointerp_scoring": Session(
        "autointerp/scoring.py",
        (
            "tests/unit/test_autointerp_pipeline.py",
            "tests/unit/test_autointerp_scorers.py",
        ),
    ),
    # The scorers' definitions and the explain/score split (both read by the
    # same pipeline tests as scoring.py).
    "autointerp_scorers": Session(
        "autointerp/scorers.py",
        (
            "tests/unit/test_autointerp_scorers.py",
            "tests/unit/test_autointerp_pipeline.py",
        ),
    ),
    "autointerp_split": Session(
        "autointerp/split.py",
        (
            "tests/unit/test_autointerp_split.py",
            "tests/unit/test_autointerp_scorers.py",
            "tests/unit/test_autointerp_pipeline.py",
        ),
    ),
    "sae_evaluation": Session("sae/evaluation.py", ("tests/unit/test_sae.py",)),
    "hooks": Session(
        "activations/hooks.py",
        ("tests/unit/test_extract.py", "tests/unit/test_lora_capture.py"),
    ),
}
# The order `make mutation` runs them in: smallest and most central first.
DEFAULT = list(SESSIONS)

DETECTED = {"killed", "timeout", "caught by type check", "segfault"}


def _setup_cfg(s: Session) -> str:
    def lines(key: str, values) -> str:
        return f"{key}=\n" + "".join(f"    {v}\n" for v in values)

    return (
        "[mutmut]\n"
        "source_paths=src\n"
        + lines("only_mutate", [f"src/lorascope/{s.module}"])
        + lines(
            "pytest_add_cli_args_test_selection",
            [*s.tests, *(f"--deselect={s.tests[0]}::{t}" for t in s.deselect)],
        )
        # No cache dir in the copy; the project's --durations output is noise.
        + lines("pytest_add_cli_args", ["-p", "no:cacheprovider", "--durations=0"])
        + lines("also_copy", ALSO_COPY)
        # Fork each mutant from a server that has imported the tests but run
        # none: a child forked after polars' thread pool started (the stats
        # pass runs polars) deadlocks in its first polars call.
        + "process_isolation=forkserver\n"
    )


def _status(work: Path, s: Session, dotted: str) -> dict[str, str]:
    """mutmut's status of each of the session's mutants, from its meta file."""
    from mutmut.stats import status_by_exit_code

    meta = work / "mutants" / "src" / "lorascope" / (s.module + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    if s.functions:
        prefixes = tuple(f"{dotted}.x_{f}__mutmut_" for f in s.functions)
        codes = {k: v for k, v in codes.items() if k.startswith(prefixes)}
    return {k: status_by_exit_code[v] for k, v in codes.items()}


def _mutmut(work: Path, names: list[str]) -> subprocess.CompletedProcess:
    # One child at a time: the machines this runs on are shared.
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *names],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )


def run_session(name: str, s: Session, out: Path, recheck: bool = False) -> dict:
    """Run one session in a fresh scratch dir; return its counts and survivors.

    `recheck`: reuse the scratch dir of the session's last run. mutmut makes
    the mutants of the module's functions that changed since (their results
    are dropped) and runs them; then the earlier survivors run again against
    the tests as they are now (mutmut copies tests/ afresh on every run).
    Every other result stands: a recheck assumes the tests only gained
    checks since the run.
    """
    work = out / name
    dotted = "lorascope." + s.module.removesuffix(".py").replace("/", ".")
    patterns = [f"{dotted}.x_{f}__mutmut_*" for f in s.functions]
    copy = work / "mutants" / "src" / "lorascope" / s.module
    t0 = time.monotonic()
    if recheck:
        if not copy.with_name(copy.name + ".meta").exists():
            raise RuntimeError(f"session {name}: no earlier run in {work}")
        old = _status(work, s, dotted)
        # mutmut copies a source file only where its copy is missing; a fresh
        # copy makes it compare each function with the run's (by hash).
        copy.unlink()
        # Without names mutmut runs only the mutants that have no result.
        procs = [_mutmut(work, patterns)]
        if procs[0].returncode == 0 and copy.with_name(copy.name + ".meta").exists():
            now = _status(work, s, dotted)
            again = [k for k, v in old.items() if v not in DETECTED]
            again = [k for k in again if now.get(k, "killed") not in DETECTED]
            if again:
                procs.append(_mutmut(work, again))
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for entry in ["src", "tests", *ALSO_COPY]:
            (work / entry).symlink_to(REPO / entry)
        (work / "setup.cfg").write_text(_setup_cfg(s))
        procs = [_mutmut(work, patterns)]
    log = work / ("mutmut-recheck.log" if recheck else "mutmut.log")
    said = "".join(p.stdout + p.stderr for p in procs)
    log.write_text(said)
    rc = next((p.returncode for p in procs if p.returncode), 0)
    meta = copy.with_name(copy.name + ".meta")
    if rc != 0 or not meta.exists():
        # Without mutmut's spinner lines, which are most of its output.
        lines = [
            ln
            for ln in said.splitlines()
            if not "\u2800" <= ln.lstrip()[:1] <= "\u28ff"  # braille spinner
        ]
        raise RuntimeError(
            f"mutmut failed for session {name} (exit {rc}); "
            f"see {log}:\n" + "\n".join(lines[-40:])
        )
    status = _status(work, s, dotted)
    unchecked = [k for k, v in status.items() if v == "not checked"]
    if unchecked:
        raise SystemExit(f"session {name}: {len(unchecked)} mutants not checked")
    survivors = sorted(k for k, v in status.items() if v not in DETECTED)
    diffs = {}
    for k in survivors:
        shown = subprocess.run(
            [sys.executable, "-m", "mutmut", "show", k],
            cwd=work,
            capture_output=True,
            text=True,
        )
        diffs[k] = (status[k], shown.stdout.strip() or shown.stderr.strip())

    def count(*wanted: str) -> int:
        return sum(v in wanted for v in status.values())

    n = len(status)
    detected = count(*DETECTED)
    return dict(
        module=s.module,
        tests=" ".join(s.tests),
        mutants=n,
        killed=count("killed", "caught by type check", "segfault"),
        survived=count("survived", "suspicious"),
        no_tests=count("no tests"),
        timeout=count("timeout"),
        rate=detected / n if n else float("nan"),
        seconds=round(time.monotonic() - t0),
        diffs=diffs,
    )


def report(rows: list[dict]) -> str:
    head = (
        "| session | module | tests | mutants | killed | survived | no tests |"
        " timeout | kill rate | s |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {name} | {r['module']} | {r['tests']} | {r['mutants']} | {r['killed']} |"
        f" {r['survived']} | {r['no_tests']} | {r['timeout']} |"
        f" {r['rate']:.1%} | {r['seconds']} |\n"
        for name, r in rows
    )
    tot = {k: sum(r[k] for _, r in rows) for k in ("mutants", "killed", "timeout")}
    total = (
        f"\nTotal: {tot['mutants']} mutants, "
        f"{(tot['killed'] + tot['timeout']) / max(tot['mutants'], 1):.1%} killed.\n"
    )
    surv = "".join(
        f"\n### {k} ({st})\n\n```diff\n{d}\n```\n"
        for _, r in rows
        for k, (st, d) in r["diffs"].items()
    )
    return head + body + total + ("\n## Survivors\n" + surv if surv else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sessions", nargs="*", help=f"default: all ({', '.join(DEFAULT)})")
    ap.add_argument("--out", type=Path, default=REPO / "mutation")
    ap.add_argument(
        "--recheck",
        action="store_true",
        help="rerun only the survivors of each session's last run in --out "
        "against the current tests (the module itself must be unchanged)",
    )
    args = ap.parse_args(argv)
    unknown = [n for n in args.sessions if n not in SESSIONS]
    if unknown:
        ap.error(f"unknown session(s) {unknown}; known: {', '.join(SESSIONS)}")
    rows, failed = [], []
    for name in args.sessions or DEFAULT:
        print(f"== {name}", flush=True)
        try:
            rows.append(
                (
                    name,
                    run_session(name, SESSIONS[name], args.out.resolve(), args.recheck),
                )
            )
        except RuntimeError as e:  # the other sessions still run
            print(e, flush=True)
            failed.append(name)
            continue
        text = report(rows)
        # A recheck keeps the full run's report beside its own.
        (args.out / ("report-recheck.md" if args.recheck else "report.md")).write_text(
            text
        )
        print(text.split("\n## Survivors")[0], flush=True)
    if failed:
        print(f"sessions that did not run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
