"""`python -m lorascope.evaluation ...`: the generation job rule
`eval_generate` launches (see `lorascope.evaluation.job`)."""

# The guard matters: vLLM's spawned engine core re-imports this module.
if __name__ == "__main__":
    # First, before the imports (torch, vLLM: seconds): a job whose snakemake
    # is gone stops, and one whose snakemake dies later stops with its
    # children (vLLM's engine core), as script jobs do.
    from lorascope.core.processes import stop_when_snakemake_dies

    stop_when_snakemake_dies()

    from lorascope.evaluation.job import main

    main()
