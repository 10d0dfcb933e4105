"""``walrep bench``: one harness over the benchmark scenarios (docs in benchmarks/README.md).

Each scenario is a script in ``benchmarks/`` run in a fresh process (``scenarios.py``
says how, and which of its figures are the headline ones: walrep beside the limit or a
peer measured in the same run, as a ratio); ``harness.py`` runs them, collects one
results document and rewrites the table in benchmarks/README.md.
"""
