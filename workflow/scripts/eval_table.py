"""Rule eval_table: Table 1 (recovery vs full fine-tune) or Table 2 (ablations)."""

from collections import defaultdict
from pathlib import Path

import polars as pl

from lorascope.io import atomic_path, to_markdown, write_parquet
from lorascope.runtime import script_logging
from lorascope.tables import correct_matrix, table1, table2, to_display

smk = snakemake  # noqa: F821 (injected by Snakemake)
TITLES = {
    "table1": "Table 1: base, rank-1 LoRA, full fine-tune; recovery = (rank1 - base) / (full - base)",
    "table2": "Table 2: rank-1 LoRA with attention / MLP components ablated; recovery relative to the LoRA's gain",
}

with script_logging(smk) as log:
    which, ecfg = smk.wildcards.table, smk.params.eval
    frames = defaultdict(dict)  # benchmark -> variant -> frame
    for path in map(Path, smk.input.samples):
        frames[path.stem][path.parent.name] = pl.read_parquet(path)
    correct = {}
    for bench, by_variant in frames.items():
        _, matrix = correct_matrix(by_variant, bench)
        correct[bench] = dict(zip(by_variant, matrix, strict=True))
    make = table1 if which == "table1" else table2
    table = make(correct, n_boot=ecfg["bootstrap_samples"], ci=ecfg["ci"], seed=smk.params.seed)
    shown = [c for c in table.columns if c != "benchmark" and c != "n" and not c.endswith(("_lo", "_hi", "_defined"))]
    text = f"# {TITLES[which]}\n\n" + to_markdown(to_display(table, shown))
    text += f"\nBrackets: {ecfg['ci']:.0%} paired bootstrap intervals over problems ({ecfg['bootstrap_samples']} resamples); 'undefined' = the gain it divides by is zero or negative.\n"
    write_parquet(table, smk.output.table)
    with atomic_path(smk.output.markdown) as tmp:
        tmp.write_text(text)
    log.info("\n%s", text)
