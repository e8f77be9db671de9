# Stage 'eval': not wired yet (being written; see docs/ARCHITECTURE.md).


def eval_targets():
    return []
