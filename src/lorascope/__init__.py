"""lorascope: a rank-1 LoRA as a measurement device for reasoning fine-tuning.

The package holds all logic; `workflow/` holds the thin Snakemake rules that
call it. One subpackage per stage, named like its rule file in
`workflow/rules/` (`toy`, `data`, `train`, `adapters`, `evaluation`,
`activations`, `sae`, `autointerp`, `ablation`, `figures`, `dashboards`),
and `core`, what every stage shares. Stages import `core` and nothing of each
other: they meet only through artifacts on disk (a test checks this).
docs/ARCHITECTURE.md maps every module and artifact.
"""

__version__ = "0.1.0"
__all__ = [
    "ablation",
    "activations",
    "adapters",
    "autointerp",
    "core",
    "dashboards",
    "data",
    "evaluation",
    "figures",
    "sae",
    "toy",
    "train",
]
