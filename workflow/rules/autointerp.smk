# Stage 'autointerp': not wired yet (being written; see docs/ARCHITECTURE.md).


def autointerp_targets():
    return []
