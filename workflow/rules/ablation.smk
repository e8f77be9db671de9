# Stage 'ablation': not wired yet (being written; see docs/ARCHITECTURE.md).


def ablation_targets():
    return []
