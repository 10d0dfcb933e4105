"""Tests of walrep.engine: the deterministic core, its apps, snapshots and sinks."""
