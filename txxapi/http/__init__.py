"""HTTP: the site both listeners serve, the RPC endpoints and handlers."""
