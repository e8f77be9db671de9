# Stage 'adapters': not wired yet (being written; see docs/ARCHITECTURE.md).
