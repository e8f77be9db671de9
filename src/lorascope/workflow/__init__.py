"""The Snakefile's machinery, used by workflow/rules/common.smk while the
workflow is parsed (nothing here imports torch), not by the stages' logic.

- `codeversion`: content hashes of the code a rule runs (`code_of`).
- `wiring`: the config keys a rule declares (`JobConfig`), runtime keys that
  are never recorded, secrets redacted; jobs read their params through it.
- `checks`: what the schema cannot express (paths, names, SAE width, keys),
  and the environment (API keys) before any job starts.
"""

__all__ = ["checks", "codeversion", "wiring"]
