"""`python -m lorascope.train ...`: the entry point the training rules launch."""

if __name__ == "__main__":
    # First, before the imports (torch, TRL: seconds): a job whose snakemake
    # is gone stops, and one whose snakemake dies later stops with its
    # children (each rank under accelerate watches for itself).
    from lorascope.core.processes import stop_when_snakemake_dies

    stop_when_snakemake_dies()

    from lorascope.train.trainer import main

    main()
