"""Paper figures, one small module per figure family (rules in figures.smk).

- `classes`: Fig. 1 left, monosemanticity classes per feature kind.
- `categories`: Fig. 1 right, category shares and LoRA/MLP enrichment.
- `sae_density`: Fig. 2, SAE activation mass by category/subcategory.
- `ablation`: Fig. 3, KL by ablated layer and module x layer heatmap.
- `table_image`: Tables 1 and 2 as images.
- `steering`: the steering sweep.
- `style`: shared geometry, fonts, colours, footers and atomic saving.
- `readme`: downscaled copies for docs/figures/ (`make readme-figures`).
"""
