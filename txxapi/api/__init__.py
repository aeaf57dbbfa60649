"""The API layer: dispatch of decoded calls, sessions, RBAC, Async tasks."""
