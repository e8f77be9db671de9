"""Stage adapters (workflow/rules/adapters.smk, rule `adapters_ablate`).

Consumes: `train/rank1/adapter/`.
Produces: `adapters/{rank1-attn-ablated,rank1-mlp-ablated}/`, PEFT dirs with
the chosen components' lora_B columns zeroed (Table 2).

- `surgery`: write a derived adapter with selected components ablated.
"""

__all__ = ["surgery"]
