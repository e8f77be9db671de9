# Stage 'figures': not wired yet (being written; see docs/ARCHITECTURE.md).


def figures_targets():
    return []
