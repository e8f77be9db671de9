"""lorascope: a rank-1 LoRA as a measurement device for reasoning fine-tuning.

The package holds all logic; `workflow/` holds the thin Snakemake rules that
call it. See docs/ARCHITECTURE.md for the map of modules and artifacts.
"""

__version__ = "0.1.0"
