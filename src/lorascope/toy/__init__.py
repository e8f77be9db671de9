"""The embedded toy world: a tiny Qwen2 base model, tokenizer and tasks.

It lets the whole DAG run on a laptop CPU in minutes through the same code
paths as the paper-scale run (see docs/ARCHITECTURE.md, stage `toy`).
"""
