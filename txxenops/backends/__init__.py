"""txxenops backends."""
