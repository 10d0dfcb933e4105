"""Deterministic simulator of walrep's replication: real cores, simulated world."""
