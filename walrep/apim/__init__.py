"""WSO2 API-M analytics: the input streams and a seeded generator of their events."""

from walrep.apim.generator import STREAMS, ApimGenerator, Attributes, Pair, ndjson_line

__all__ = ["STREAMS", "ApimGenerator", "Attributes", "Pair", "ndjson_line"]
