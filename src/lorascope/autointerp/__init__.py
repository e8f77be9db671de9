"""Stage autointerp (workflow/rules/autointerp.smk: rules `autointerp_explain`,
`autointerp_categories`, `autointerp_assign`, `autointerp_score`,
`autointerp_summary`).

Consumes: `features/{lora,mlp,sae}/{features,contexts}.parquet`.
Produces: `autointerp/explanations/{kind}.parquet`, `autointerp/categories.json`,
`autointerp/assignments/{kind}.parquet`, `autointerp/scores/{kind}.parquet`,
`autointerp/summary/*.{parquet,md}`, `autointerp/usage.json`.

- `providers`: the provider table (`PROVIDERS`): offline, openai, anthropic,
  one class each behind one interface; the steps never name a provider.
- `settings`: LLM client settings from the config; `clients`: the LLM calls
  with retries, budgets, concurrency; `cache`: SQLite cache.
- `prompts` (+ `templates/`): replaceable prompt templates and reply parsing.
- `offline`: the activation statistics behind the offline provider.
- `explain`, `categories`, `scoring`, `summary`: one module per rule.
"""

__all__ = [
    "cache",
    "categories",
    "clients",
    "explain",
    "offline",
    "prompts",
    "providers",
    "scoring",
    "settings",
    "summary",
]
