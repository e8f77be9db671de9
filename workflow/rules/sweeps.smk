# Stage 'sweeps' (issue 30, beyond the paper): with sweep.ranks / seeds /
# checkpoints set, every member's own stages run under its {member} prefix
# (common.smk); these rules compare the members: recovery against rank
# (Table 1 per member and per rank), the reference's features that persist
# in every other member, and when they emerge over its checkpoints.

SWEEP_ON = len(MEMBERS) > 1
# The reference member's feature kinds matched across members.
SWEEP_KINDS = config["sweep"]["kinds"]


def sweep_members_param(wildcards=None):
    """Every member as the jobs read it (recorded: a new member reruns)."""
    return [m.as_dict() | {"root": res(m.prefix)} for m in MEMBERS]


def sweep_recovery_inputs(wildcards):
    return {
        "shared": expand(
            res("eval/{variant}/{benchmark}.parquet"),
            variant=["base", "full"],
            benchmark=EVAL_BENCHMARKS,
        ),
        "members": member_targets(
            "train/rank1/adapter",
            *(f"eval/rank1/{b}.parquet" for b in EVAL_BENCHMARKS),
        ),
    }


def sweep_persistence_inputs(wildcards):
    reference = [
        path
        for kind in SWEEP_KINDS
        for path in (
            f"features/{kind}/features.parquet",
            f"autointerp/assignments/{kind}.parquet",
            f"autointerp/explanations/{kind}.parquet",
        )
    ]
    return {
        "members": member_targets(
            "activations/manifest.json",
            "components.parquet",
            "train/rank1/adapter",
            *(
                ["sae/model", "features/sae/features.parquet"]
                if "sae" in SWEEP_KINDS
                else []
            ),
        ),
        "reference": [res(p) for p in reference],
    }


rule sweep_recovery:
    input:
        unpack(sweep_recovery_inputs),
    output:
        table=res("sweep/recovery.parquet"),
        md=res("sweep/recovery.md"),
    log:
        log_("sweeps/sweep_recovery.log"),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("sweep_recovery"),
    params:
        job="recovery",
        members=sweep_members_param,
        reference=MEMBERS[0].tag,
        benchmarks=EVAL_BENCHMARKS,
        eval=cfg("eval", "bootstrap_samples", "ci"),
        seed=setting("seed"),
        code=code_of("sweeps.py"),
    script:
        "../scripts/sweeps.py"


rule sweep_persistence:
    input:
        unpack(sweep_persistence_inputs),
    output:
        table=res("sweep/persistence.parquet"),
        md=res("sweep/persistence.md"),
        shares=res("sweep/persistence_shares.parquet"),
    log:
        log_("sweeps/sweep_persistence.log"),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("sweep_persistence"),
    params:
        job="persistence",
        members=sweep_members_param,
        reference=MEMBERS[0].tag,
        kinds=SWEEP_KINDS,
        threshold=setting("sweep.persist_threshold"),
        code=code_of("sweeps.py"),
    script:
        "../scripts/sweeps.py"


rule sweep_emergence:
    input:
        persistence=res("sweep/persistence.parquet"),
    output:
        curve=res("sweep/emergence.parquet"),
        features=res("sweep/emergence_features.parquet"),
    log:
        log_("sweeps/sweep_emergence.log"),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("sweep_emergence"),
    params:
        job="emergence",
        members=sweep_members_param,
        reference=MEMBERS[0].tag,
        code=code_of("sweeps.py"),
    script:
        "../scripts/sweeps.py"


def sweep_targets():
    """What the sweep adds to `all` (and builds alone as target `sweep`)."""
    if not SWEEP_ON:
        return []
    out = [res("sweep/recovery.parquet"), res("sweep/persistence.parquet")]
    out += [res("figures/fig_recovery_rank.png")]
    if config["sweep"]["checkpoints"]:
        out += [res("sweep/emergence.parquet"), res("figures/fig_emergence.png")]
    return out


final_targets(*sweep_targets())
