"""Stage autointerp (workflow/rules/autointerp.smk: rules `autointerp_explain`,
`autointerp_categories`, `autointerp_assign`, `autointerp_score`,
`autointerp_summary`).

Consumes: `features/{lora,mlp,sae}/{features,contexts}.parquet`.
Produces: `autointerp/explanations/{kind}.parquet`, `autointerp/categories.json`,
`autointerp/assignments/{kind}.parquet`, `autointerp/scores/{kind}.parquet`,
`autointerp/summary/*.{parquet,md}`, `autointerp/usage.json`.

- `settings`: LLM client settings from the config; `clients`: OpenAI /
  Anthropic calls with retries, budgets, concurrency; `cache`: SQLite cache.
- `prompts` (+ `templates/`): replaceable prompt templates and reply parsing.
- `offline`: the explainer used when no LLM is configured.
- `explain`, `categories`, `scoring`, `summary`: one module per rule.
"""

__all__ = [
    "cache",
    "categories",
    "clients",
    "explain",
    "offline",
    "prompts",
    "scoring",
    "settings",
    "summary",
]
