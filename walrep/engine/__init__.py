"""walrep.engine: deterministic processing of committed events (see docs/engine.md)."""
