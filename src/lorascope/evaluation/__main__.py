"""`python -m lorascope.evaluation ...`: the generation job rule
`eval_generate` launches (see `lorascope.evaluation.job`)."""

from lorascope.evaluation.job import main

# The guard matters: vLLM's spawned engine core re-imports this module.
if __name__ == "__main__":
    main()
