# lorascope: train a rank-1 LoRA on reasoning traces and use it as a
# measurement device. Glue only: the stages live in workflow/rules/, the logic
# in src/lorascope/. See README.md and docs/ARCHITECTURE.md.
import os

from snakemake.utils import min_version

min_version("9.0")


# The embedded default applies only when no --configfile is given, so a
# paper-scale config never inherits toy values (a config file given on the
# command line starts from the schema's defaults: the paper's values).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/hub.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/adapters.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/autointerp.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/causal.smk"
include: "workflow/rules/diffing.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/groundtruth.smk"
include: "workflow/rules/sweeps.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/dashboards.smk"


from lorascope.workflow.preflight import check_before_jobs
from lorascope.workflow.warm.jobs import start as start_warm_interpreter


# API keys, devices, target modules and SAE steps are checked once jobs are
# about to run (not in a dry run, and only for the jobs scheduled), still
# before any job starts (and removes its old outputs).
onstart:
    # A local run's CPU jobs start as forks of one interpreter that has
    # imported torch & co. once (lorascope.workflow.warm); started first, so
    # that its imports overlap the checks.
    start_warm_interpreter(workflow, logger)
    check_before_jobs(workflow, config)
    # Without `hardware` every job gets the profile's defaults and no GPU: on
    # a cluster that is a CPU run, say so before anything is submitted.
    if config["hardware"] is None and not workflow.local_exec:
        logger.warning(
            "config key `hardware` is null: no resource model, every job gets "
            "the profile's default resources and no GPU (profiles/slurm sets it; "
            "a --config on the command line replaces the profile's)"
        )


rule all:
    default_target: True
    input:
        get_final_output(),


# The sweep's comparisons alone (sweep recovery, persistence, emergence and
# their figures), without every member's other stages.
rule sweep:
    input:
        sweep_targets(),
