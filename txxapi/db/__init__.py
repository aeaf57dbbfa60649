"""The pool database: in-memory tables, persistence, change feed."""
