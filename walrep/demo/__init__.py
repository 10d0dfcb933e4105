"""The two-node demo (``walrep demo``): node processes, the scenario, the verdict."""
