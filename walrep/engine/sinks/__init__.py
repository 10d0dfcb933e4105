"""Sinks: where the active node's engine delivers aggregation rows and app outputs.

Only the protocol and its values are imported here (pure data, no IO), so the engine core
can name them without pulling in a database driver or an HTTP client. The sinks live in
their own modules: ``rdbms`` (exactly once), ``ndjson`` and ``webhook`` (at least once).
See docs/sinks.md.
"""

from walrep.engine.sinks.base import Output, OutputId, Sink, SinkBatch

__all__ = ["Output", "OutputId", "Sink", "SinkBatch"]
