"""walrep: a two-node active-passive replicated event log for analytics."""

__version__ = "0.1.0"
