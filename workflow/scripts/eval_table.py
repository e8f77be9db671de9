"""Rule eval_table: Table 1 (recovery vs full fine-tune) or Table 2 (ablations)."""

from collections import defaultdict
from pathlib import Path

import polars as pl

from lorascope.core.chat import THINK_PREFILL
from lorascope.core.forcing import describe
from lorascope.core.io import atomic_path, write_parquet
from lorascope.core.runtime import script_logging
from lorascope.evaluation.tables import (
    base_param_count,
    correct_matrix,
    safetensors_numel,
    table1,
    table2,
    to_markdown_report,
    with_param_fraction,
    with_prompting,
)

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    which, ecfg = smk.wildcards.table, smk.params.eval
    frames = defaultdict(dict)  # benchmark -> variant -> per-sample frame
    for path in map(Path, smk.input.samples):
        frames[path.stem][path.parent.name] = pl.read_parquet(path)
    correct = {}
    for bench, by_variant in frames.items():
        _, matrix = correct_matrix(by_variant, bench)
        correct[bench] = dict(zip(by_variant, matrix, strict=True))
    make = table1 if which == "table1" else table2
    n_boot, ci = ecfg["bootstrap_samples"], ecfg["ci"]
    table = make(correct, n_boot=n_boot, ci=ci, seed=smk.params.seed)
    if which == "table1":  # the paper's "< 0.03% trainable parameters"
        adapter = Path(smk.input.adapter) / "adapter_model.safetensors"
        base, how = base_param_count(smk.params.base, smk.params.revision)
        table = with_param_fraction(table, safetensors_numel(adapter), base)
        log.info("base parameters counted from its %s", how)
    prefill, forcing = ecfg["think_prefill"], describe(ecfg["budget_forcing"])
    table = with_prompting(table, prefill, forcing)
    text = to_markdown_report(
        table,
        which,
        ci,
        n_boot,
        f"{prefill}: {THINK_PREFILL[prefill]}",
        forcing,
        rank=smk.params.rank,
    )
    write_parquet(table, smk.output.table)
    with atomic_path(smk.output.markdown) as tmp:
        tmp.write_text(text)
    log.info("\n%s", text)
