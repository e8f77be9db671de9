# Stage 'activations': not wired yet (being written; see docs/ARCHITECTURE.md).


def activations_targets():
    return []
