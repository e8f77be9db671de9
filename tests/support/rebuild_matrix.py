"""Rebuild semantics as a tested contract (the matrix and its runner; the
tests are tests/workflow/test_rebuild.py for config edits and
tests/workflow/test_rebuild_files.py for files, code, touches and moves, two files so
the two pytest workers share the dry runs).

On a copy of the finished micro run, laid out as a checkout (code, config,
results and Snakemake's metadata in one folder), each edit below must make
`snakemake -n` schedule exactly the jobs in its row: nothing stale, nothing
rebuilt for nothing. Every edit is undone before the next row (contents and
mtimes), so all rows share one copy and cost one dry run each.

The copy also points the config at three user files (an SFT data file, a
benchmark file, a prompt template) and computes what those change once, so
the rows can edit them in place. Snakemake runs the way a user runs it: the
default workflow profile (profiles/default) applies.

A second table (FULL_CHECKPOINT_ROWS) runs on the same copy with
model.full_finetune naming a local directory (a copy of the trained full
fine-tune): the copy is brought up to date with it first, for real, and then
edits inside that directory must rerun exactly what reads it.
"""

import fcntl
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

import polars as pl
import wfrun
import yaml

BENCH = "toy_add3"  # tests/configs/micro.yaml evaluates one benchmark
MATH500 = "results/micro/data/bench/math500.parquet"


def _eval(*variants):
    return {
        job
        for v in variants
        for job in (
            f"eval_generate[engine={v}]",
            f"eval_grade[benchmark={BENCH},variant={v}]",
            f"eval_summary[variant={v}]",
        )
    }


def _kinds(rule, *kinds):
    return {f"{rule}[kind={k}]" for k in kinds}


ALL_KINDS = ("lora", "mlp", "sae")
TABLES = {"eval_table[table=table1]", "eval_table[table=table2]"}
TABLE_FIGURES = {"figure_table1", "figure_table2"}
AUTOINTERP_FIGURES = {"figure_classes", "figure_categories", "figure_sae_density"}
AUTOINTERP_FIGURES |= {"figure_scores"}
FIGURES = AUTOINTERP_FIGURES | TABLE_FIGURES | {"figure_ablation", "figure_steering"}
FIGURES |= {"figure_causal", "figure_diffing"}
FIGURES |= {"figure_attribution", "figure_behaviour_sets"}
# Rule model_diff (issue 32) reads the SAE, the adapter, the full fine-tune
# and its raw generations (not the grades); its figure and the dashboards'
# full fine-tune panel read its tables.
DIFF = {"model_diff", "figure_diffing", "dashboards"}
# Feature ablation and direct effects read the SAE, the LoRA features and the
# adapter; the causal figure also reads the explanations and scores.
# Feature accuracy reads the feature table, the component KL and the SAE.
CAUSAL = {"feature_ablation", "direct_effects", "figure_causal", "feature_accuracy"}
# Attribution reads the SAE, the feature tables, the adapter and the base
# model; behaviour sets also generate and grade; the dashboards show both.
ATTRIBUTION = {"feature_attribution", "figure_attribution", "dashboards"}
ATTRIBUTION |= {"behaviour_sets", "figure_behaviour_sets"}
SUMMARY_ON = {"autointerp_summary", *AUTOINTERP_FIGURES, "dashboards"}
STEERING = {"steering_sweep", "figure_steering"}
EXPLAIN_ON = {
    *_kinds("autointerp_explain", *ALL_KINDS),
    "autointerp_categories",
    *_kinds("autointerp_assign", *ALL_KINDS),
    *_kinds("autointerp_score", *ALL_KINDS),
    *SUMMARY_ON,
    *STEERING,  # picks SAE features by their explanations
    "figure_causal",
    "sae_export",  # features.json carries the SAE's explanations
}
SAE_ON = {
    "train_sae",
    "sae_features",
    "autointerp_explain[kind=sae]",
    "autointerp_categories",
    *_kinds("autointerp_assign", *ALL_KINDS),  # the categories changed
    "autointerp_score[kind=sae]",
    *SUMMARY_ON,
    *STEERING,
    *CAUSAL,
    *DIFF,
    *ATTRIBUTION,
    "sae_export",
}
LORA_VARIANTS = ("rank1", "rank1-attn-ablated", "rank1-mlp-ablated")
ADAPTER_ON = {
    "components",
    "adapters_ablate[variant=rank1-attn-ablated]",
    "adapters_ablate[variant=rank1-mlp-ablated]",
    *_eval(*LORA_VARIANTS),
    *TABLES,
    *TABLE_FIGURES,
    "extract_activations",
    "lora_features",
    "mlp_features",
    *EXPLAIN_ON,
    *SAE_ON,
    "kl_ablation",
    "figure_ablation",
    *CAUSAL,
}
FULL_ON = {*_eval("full"), "eval_table[table=table1]", "figure_table1", *DIFF}
SFT_ON = {"sft_dataset", "train_rank1", *ADAPTER_ON, "train_full", *FULL_ON}
# Every job reading the base model: all but the toy set, the benchmarks and
# what reads only them (no job reads the base model's bytes without them).
BASE_ON = {"toy_base_model", *SFT_ON, *_eval("base"), *TABLES, *TABLE_FIGURES}
BASE_ON |= {"feature_accuracy", "steering_sweep", "figure_steering"}
# What grades a completion (core/grading.py): the evaluation's grading and
# what reads grades, steering and feature accuracy (both generate and grade),
# the dashboards (their accuracy panel), nothing that trains or extracts.
GRADING_ON = {
    f"eval_grade[benchmark={BENCH},variant={v}]"
    for v in ("base", "full", *LORA_VARIANTS)
}
GRADING_ON |= {f"eval_summary[variant={v}]" for v in ("base", "full", *LORA_VARIANTS)}
GRADING_ON |= {*TABLES, *TABLE_FIGURES, *STEERING, "feature_accuracy", "dashboards"}
GRADING_ON |= {"behaviour_sets", "figure_behaviour_sets"}

# Every edit (kind, what) and the exact set of jobs it must schedule.
# kind: "config" = an override merged into the config, "cli" = `--config`
# values on the command line, "file" = a user file the config points at,
# rewritten in place, "restore-older" = the same rewrite dated a year back,
# "code" = a repo file edited, "touch" = mtime only, "move" = the whole
# checkout renamed. (A comment or docstring edit reruns nothing:
# tests/unit/test_wiring.py, without a dry run.)
REBUILD_MATRIX = [
    ("a figure style key", "config", {"figures": {"dpi": 120}}, FIGURES),
    # issue 33, item 5: a value restated on the command line (a number given
    # as the file gives it) is the same value
    ("SAE k restated on the command line", "cli", ["sae={k: 4}"], set()),
    (
        "rank-1 epochs restated on the command line",
        "cli",
        ["train={rank1: {epochs: 1}}"],
        set(),
    ),
    # issue 33, item 6: knobs that change no artifact
    ("the loss-logging cadence", "config", {"train": {"logging_steps": 7}}, set()),
    (
        "the choice shuffle seed (no benchmark here shuffles)",
        "config",
        {"eval": {"choice_seed": 7}},
        set(),
    ),
    ("SAE k", "config", {"sae": {"k": 3}}, SAE_ON),
    (
        "an autointerp setting",
        "config",
        {"autointerp": {"detection": {"n_nonactivating": 4}}},
        {*_kinds("autointerp_score", *ALL_KINDS), *SUMMARY_ON, "figure_causal"}
        | {"sae_export"},  # features.json carries the scores
    ),
    (
        "the rank-1 learning rate",
        "config",
        {"train": {"rank1": {"learning_rate": "2e-2"}}},
        {"train_rank1", *ADAPTER_ON},
    ),
    (
        "the full-FT learning rate",
        "config",
        {"train": {"full": {"learning_rate": "2e-3"}}},
        {"train_full", *FULL_ON},
    ),
    (
        "memory-only and concurrency knobs",
        "config",
        {
            "activations": {"batch_tokens": 512},
            "ablation": {"variants_per_forward": 2, "logit_chunk": 64},
            "autointerp": {"concurrency": 2, "retries": 9, "cache": "elsewhere.db"},
            "train": {"save_steps": 2},
        },
        set(),
    ),
    (
        "a toy benchmark added, not evaluated",
        "config",
        {"toy": {"benchmarks": {"toy_add5": {"digits": 5, "n": 8}}}},
        set(),  # its own job only; toy_add3 and the SFT set stay as they are
    ),
    ("the SFT data file", "file", "inputs/sft.parquet", SFT_ON),
    (
        "a benchmark file",
        "file",
        "inputs/math500.jsonl",
        {"bench_prepare[benchmark=math500]"},
    ),
    ("a prompt template", "file", "inputs/explain.txt", EXPLAIN_ON),
    # issue 33, item 3: another version dated before every output (cp -p, a
    # git checkout of an old revision, rsync -t)
    (
        "the SFT data file, restored older",
        "restore-older",
        "inputs/sft.parquet",
        SFT_ON,
    ),
    (
        "a benchmark file, restored older",
        "restore-older",
        "inputs/math500.jsonl",
        {"bench_prepare[benchmark=math500]"},
    ),
    (
        "a prompt template, restored older",
        "restore-older",
        "inputs/explain.txt",
        EXPLAIN_ON,
    ),
    ("touch of a user file", "touch", "inputs/sft.parquet", set()),
    # issue 33, item 1: the shipped toy weights a rule copies are its code
    (
        "the shipped toy base model's config.json",
        "code",
        "resources/toy/base_model/config.json",
        BASE_ON,
    ),
    # issue 33, item 4: a grader edit regrades, retrains nothing
    ("a one-line grader edit", "code", "src/lorascope/core/grading.py", GRADING_ON),
    ("a package module", "code", "src/lorascope/sae/training.py", SAE_ON),
    (
        "a figure's plotting module",
        "code",
        "src/lorascope/figures/steering.py",
        {"figure_steering"},
    ),
    ("touch of a workflow script", "touch", "workflow/scripts/sae_train.py", set()),
    ("moving the checkout", "move", "", set()),
]

# The user files the copy's config points at (computed once in setup).
USER_FILES = {
    "data": {"dataset": "parquet", "data_files": "inputs/sft.parquet"},
    "eval": {"benchmark_files": {"math500": "inputs/math500.jsonl"}},
    "autointerp": {"prompts": {"explain": "inputs/explain.txt"}},
}
# issue 33, item 2: a local full fine-tune (here a copy of the trained one)
# is an input of what reads it: its pointer and the full model's evaluation.
FULL_CHECKPOINT = {"model": {"full_finetune": "inputs/full"}}
FULL_CHECKPOINT_ON = {"full_checkpoint", *FULL_ON}
FULL_CHECKPOINT_ROWS = [
    (
        "a file inside the local full fine-tune, edited in place",
        "file",
        "inputs/full/config.json",
        FULL_CHECKPOINT_ON,
    ),
    (
        "the local full fine-tune's weights, restored older",
        "restore-older",
        "inputs/full/model.safetensors",
        FULL_CHECKPOINT_ON,
    ),
    (
        "touch of the local full fine-tune's weights",
        "touch",
        "inputs/full/model.safetensors",
        set(),
    ),
    (
        "a full-FT training key, with a named checkpoint",
        "config",
        {"train": {"full": {"learning_rate": "2e-3"}}},
        set(),
    ),
]
CODE = ["Snakefile", "workflow", "src", "config", "profiles", "envs"]


def _merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and k in base else v
    return out


def _checkout(reference, path):
    """The finished run and a copy of the repo's code in one folder."""
    path.mkdir(parents=True)
    for name in CODE:
        src = wfrun.REPO / name
        if src.is_dir():
            shutil.copytree(
                src, path / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(src, path / name)
    # 4 MB: copied, since a row edits the shipped toy model
    shutil.copytree(wfrun.REPO / "resources", path / "resources")
    shutil.copytree(reference / "results", path / "results")
    shutil.copytree(
        reference / ".snakemake" / "metadata", path / ".snakemake" / "metadata"
    )
    inputs = path / "inputs"
    inputs.mkdir()
    shutil.copy2(path / "results/micro/toy/s1k.parquet", inputs / "sft.parquet")
    shutil.copytree(path / "results/micro/train/full/model", inputs / "full")
    shutil.copy2(
        path / "src/lorascope/autointerp/templates/explain.txt", inputs / "explain.txt"
    )
    rows = [
        {"problem": f"What is {i}+{i}?", "solution": "x", "answer": str(2 * i),
         "subject": "Algebra", "level": 1, "unique_id": f"test/{i}.json"}
        for i in range(4)
    ]  # fmt: skip
    (inputs / "math500.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _snakemake(work, config, targets, *args, cli=()):
    """Snakemake on `work` with `config` as its last config file and `cli`
    as `--config` values (the command line wins over every file)."""
    (work / "overrides.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "snakemake", *targets, *args,
        "--snakefile", "Snakefile", "--cores", "1",
        "--configfile", "config/config.yaml", str(wfrun.MICRO), "overrides.yaml",
    ]  # fmt: skip
    if cli:
        cmd += ["--config", *cli]
    proc = subprocess.run(
        cmd, cwd=work, env=wfrun.env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def scheduled(work, config, cli=()):
    """The jobs `snakemake -n` would run, as rule[wildcard=value,...]."""
    proc = _snakemake(work, config, ["all", MATH500], "-n", cli=cli)
    jobs, current = set(), None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            current = m.group(1)
            if current != "all":
                jobs.add(current)
            continue
        m = re.match(r"^\s+wildcards: (.*)$", line)
        if m and current and current != "all":
            # The default sweep member's empty {member} says nothing.
            parts = [w.strip() for w in m.group(1).split(",")]
            wc = ",".join(sorted(w for w in parts if w != "member="))
            jobs.discard(current)
            jobs.add(f"{current}[{wc}]" if wc else current)
            current = None
    return jobs


def _edit(path, kind):
    if kind == "touch":
        os.utime(path)
        return
    stat = path.stat()
    if path.suffix == ".safetensors":  # a retrained checkpoint: other weights
        data = bytearray(path.read_bytes())
        data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
        path.write_bytes(bytes(data))
    elif path.suffix == ".parquet":
        df = pl.read_parquet(path)  # one word more in every question
        df.with_columns(pl.col("question").str.replace("^", "Please: ")).write_parquet(
            path
        )
    elif path.suffix == ".py":
        path.write_text(path.read_text() + "\n_REBUILD_TEST = 1\n")
    else:  # a jsonl, json or template: a space and a newline more
        path.write_text(path.read_text().replace("\n", " \n", 1) + "\n")
    if kind == "restore-older":  # dated a year back: older than every output
        old = stat.st_mtime_ns - 365 * 86400 * 10**9
        os.utime(path, ns=(old, old))


CONFIG_ROWS = [row for row in REBUILD_MATRIX if row[1] in ("config", "cli")]
FILE_ROWS = [row for row in REBUILD_MATRIX if row[1] not in ("config", "cli")]


def _prepared_checkout(reference, shared):
    """The checkout with the config pointed at the user files and what those
    change computed, made once per session in the workers' shared folder
    (both test files copy it: the real runs below are the matrix's costliest
    part).
    What the user files change (the same rows through another loader, and
    offline explanations, which read no template) takes two runs: a run
    reruns whatever depends on a job it runs, while a later one sees that the
    rewritten files have the checksums already recorded."""
    prepared = shared / "rebuild-checkout"
    with open(f"{prepared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (prepared / ".prepared").exists():
            shutil.rmtree(prepared, ignore_errors=True)
            work = _checkout(reference, prepared)
            _snakemake(work, USER_FILES, ["results/micro/data/sft.parquet", MATH500])
            explanations = "results/micro/autointerp/explanations/{}.parquet"
            _snakemake(work, USER_FILES, [explanations.format(k) for k in ALL_KINDS])
            fresh = scheduled(work, USER_FILES)
            assert fresh == set(), f"a fresh copy is not up to date: {fresh}"
            (prepared / ".prepared").write_text("ok")
    return prepared


def run_matrix(reference, tmp_path_factory, rows, setting=None):
    """Dry-run each row's edit on one copy of `reference`; fail listing every
    row whose scheduled jobs differ from its expected set. `setting` (merged
    into the user files' config) is brought up to date for real first."""
    t0 = time.monotonic()
    cpu0 = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    work = tmp_path_factory.mktemp("rebuild") / "checkout"
    # A copy in another folder is a moved checkout: nothing reruns (a row).
    shared = wfrun.shared_base(tmp_path_factory.getbasetemp())
    shutil.copytree(_prepared_checkout(reference, shared), work, symlinks=True)
    user = USER_FILES
    if setting:
        user = _merge(USER_FILES, setting)
        _snakemake(work, user, ["all", MATH500])
        fresh = scheduled(work, user)
        assert fresh == set(), f"not up to date with {setting}: {fresh}"
    failures, times = [], {}
    for name, kind, what, expected in rows:
        t = time.monotonic()
        if kind == "config":
            got = scheduled(work, _merge(user, what))
        elif kind == "cli":
            got = scheduled(work, user, cli=what)
        elif kind == "move":
            moved = work.with_name("moved")
            work.rename(moved)
            got, work = scheduled(moved, user), moved
        else:
            path = work / what
            saved, stat = path.read_bytes(), path.stat()
            _edit(path, kind)
            try:
                got = scheduled(work, user)
            finally:
                path.write_bytes(saved)
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        times[name] = time.monotonic() - t
        if got != expected:
            failures.append(
                f"{name}: unexpected {sorted(got - expected)}, "
                f"missing {sorted(expected - got)}"
            )
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"rebuild matrix: {time.monotonic() - t0:.1f} s wall, "
        f"{cpu.ru_utime + cpu.ru_stime - cpu0:.1f} s CPU of the snakemake runs;",
        {k: round(v, 1) for k, v in times.items()},
    )
    assert not failures, "\n".join(failures)
