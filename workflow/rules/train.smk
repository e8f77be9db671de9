# Stage 'train': the rank-1 LoRA and the full fine-tune baseline (paper §2),
# plus the component table every later stage indexes by. With model.adapter an
# existing adapter (the paper's published one, say) takes the trained one's
# place at the same path, and every later stage runs from it.
import copy
import shlex

from lorascope.workflow.warm.jobs import python_command


def train_settings(variant):
    """What training `variant` reads (the full fine-tune has no LoRA; the
    LoRA's checkpoint steps only in a sweep that has some)."""
    keys = ["bf16", "gradient_checkpointing", "logging_steps", "save_steps"]
    keys += ["length_chunks", variant]
    keys += ["lora"] if variant == "rank1" else []
    sweep = ["sweep.checkpoints"] if variant == "rank1" and KEEP_STEPS else []
    keys = [*model_keys(), *(f"train.{k}" for k in keys), *sweep]
    return config_of("seed", "device", *keys)


KEEP_STEPS = config["sweep"]["checkpoints"]


def check_sweep():
    """The sweep axes, before any job (a dry run too); the checkpoint steps
    against an existing SFT set's rows (the training job checks again)."""
    from lorascope.workflow.sweep import sweep_problems

    sft, rows = res("data/sft.parquet"), None
    if KEEP_STEPS and os.path.isfile(sft):
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(sft).metadata.num_rows
    problems = sweep_problems(config, rows)
    if problems:
        raise WorkflowError("invalid sweep:\n  " + "\n  ".join(problems))


check_sweep()


def for_member(settings):
    """A param: `settings` (rooted at the top level, or at train.lora) as the
    sweep member reads them: its rank as train.lora.r, its training seed as
    the top-level seed (the default member's are the config's own)."""

    def param(wildcards):
        member = MEMBER[wildcards.member]
        out = copy.deepcopy(settings)
        lora = out if out.path == "train.lora" else out.get("train", {}).get("lora")
        if lora is not None:
            lora["r"] = member.rank
        if "seed" in out:
            out["seed"] = member.seed
        return out

    return param


def checkpoint_parent(wildcards):
    """The adapter dir a checkpoint member's adapter is saved in."""
    member = MEMBER[wildcards.member]
    parent = next(m for m in MEMBERS if m.trained and m.parent == member.parent)
    return res(f"{parent.prefix}train/rank1/adapter")


def adapter_source(wildcards):
    """An existing adapter: a local dir, or for a hub id its snapshot (always
    fetched by rule hub_fetch, so the import job needs no network)."""
    model = config["model"]
    snap = prefetched("model", model["adapter"], model["adapter_revision"], True)
    return snap or model["adapter"]


def full_snapshot(wildcards):
    """A named full fine-tune's prefetched snapshot (hub.prefetch), or nothing."""
    model = config["model"]
    name = model["full_finetune"]
    snapshot = prefetched("model", name, model["full_finetune_revision"])
    return [snapshot] if snapshot else []


def full_local(wildcards=None):
    """A named full fine-tune in a local dir (as written), or nothing: an input
    of every rule that reads it, so retraining it into the same folder reruns
    Table 1."""
    name = config["model"]["full_finetune"]
    return [name] if name != "train" and os.path.isdir(name) else []


def launcher(wildcards, resources):
    """One process on CPU / one GPU; accelerate + FSDP when the profile gives more.
    (Computed from resources, so Snakemake does not record it: a moved
    interpreter reruns nothing.) A command of several words, so the shell
    command uses it unquoted: every path inside is quoted here (a checkout
    path with a space)."""
    gpus = job_gpus(wildcards, resources)
    python = python_bin()
    if gpus <= 1:  # one process (on CPU, through the warm interpreter)
        return python_command(python, gpus)
    fsdp = config["train"]["fsdp_config"] or "workflow/accelerate/fsdp.yaml"
    # accelerate sits beside the interpreter (a conda env puts both on PATH).
    accelerate = os.path.join(os.path.dirname(python), "accelerate")
    return shlex.join(
        [accelerate, "launch", "--config_file", fsdp, "--num_processes", str(gpus)]
    )


# The two trainings differ only in the variant and its settings: one command
# (`python -m lorascope.train`, or accelerate with FSDP on several GPUs).
# (Not `use rule ... with:`: each exists under its own condition, so neither
# can be the other's parent.)
TRAIN_PARAMS = dict(
    base=base_model_path,
    out=output_parent,
    launcher=launcher,
    gpus=job_gpus,
)


def train_command(variant):
    return (
        f"{{params.launcher}} -m lorascope.train --variant {variant}"
        " --base {params.base:q} --sft {input.sft:q} --out {params.out:q}"
        " --config {params.config.as_json:q} --gpus {params.gpus} > {log:q} 2>&1"
    )


if config["model"]["adapter"] is None:

    rule train_rank1:
        input:
            sft=res("data/sft.parquet"),
            base=base_model_input,
        output:
            adapter=directory(mres("train/rank1/adapter")),
        log:
            mlog("train/train_rank1.log"),
        wildcard_constraints:
            member=member_pattern(MEMBERS, lambda m: m.trained),
        conda:
            "../../envs/train.yaml"
        resources:
            **resources_for("train_rank1"),
        params:
            **TRAIN_PARAMS,
            config=for_member(train_settings("rank1")),
            user_files=user_files_of(base_model_input),
            code=code_of("lorascope.train"),
        shell:
            train_command("rank1")

else:

    rule adapter_import:
        input:
            source=adapter_source,
            base=base_model_input,
        output:
            adapter=directory(res("train/rank1/adapter")),
        log:
            log_("train/adapter_import.log"),
        conda:
            "../../envs/train.yaml"
        resources:
            **resources_for("adapter_import"),
        params:
            lora=cfg("train.lora"),
            model=cfg(
                "model",
                "adapter",
                "adapter_revision",
                "adapter_check_base",
                "revision",
            ),
            base=base_model_path,
            base_repo=setting("model.base"),
            user_files=user_files_of(adapter_source, base_model_input),
            code=code_of("train_adapter_import.py"),
        script:
            "../scripts/train_adapter_import.py"


if config["model"]["full_finetune"] == "train":

    rule train_full:
        input:
            sft=res("data/sft.parquet"),
            base=base_model_input,
        output:
            model=directory(res("train/full/model")),
        log:
            log_("train/train_full.log"),
        conda:
            "../../envs/train.yaml"
        resources:
            **resources_for("train_full"),
        params:
            **TRAIN_PARAMS,
            config=train_settings("full"),
            user_files=user_files_of(base_model_input),
            code=code_of("lorascope.train"),
        shell:
            train_command("full")

else:

    rule full_checkpoint:
        input:
            snapshot=full_snapshot,
            local=full_local,
        output:
            model=directory(res("train/full/model")),
        log:
            log_("train/full_checkpoint.log"),
        conda:
            "../../envs/train.yaml"
        resources:
            **resources_for("full_checkpoint"),
        params:
            model=cfg("model", "full_finetune", "full_finetune_revision"),
            user_files=user_files_of(full_local),
            code=code_of("train_full_checkpoint.py"),
        script:
            "../scripts/train_full_checkpoint.py"


rule sweep_checkpoint:
    input:
        adapter=checkpoint_parent,
    output:
        adapter=directory(mres("train/rank1/adapter")),
    log:
        mlog("train/sweep_checkpoint.log"),
    wildcard_constraints:
        member=member_pattern(MEMBERS, lambda m: not m.trained),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("sweep_checkpoint"),
    params:
        step=lambda wildcards: MEMBER[wildcards.member].step,
        code=code_of("train_checkpoint.py"),
    script:
        "../scripts/train_checkpoint.py"


rule components:
    input:
        adapter=mres("train/rank1/adapter"),
    output:
        table=mres("components.parquet"),
    log:
        mlog("train/components.log"),
    priority: rule_priority("components")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("components"),
    params:
        lora=for_member(cfg("train.lora")),
        code=code_of("train_components.py"),
    script:
        "../scripts/train_components.py"


final_targets(*member_targets("components.parquet"), res("train/full/model"))
