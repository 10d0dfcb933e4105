"""What the node's HTTP APIs share: the typed refusal of a request, and reading a body.

A ``Refusal`` is the one shape of every 4xx/503 answer: ``{"error": code, "message": ...}``
plus any fields it names (``index`` of the event at fault, ``line``/``column`` of a query,
...), with ``Retry-After`` on a 503. Bodies are read within a byte limit (413 beyond).
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson
from aiohttp import web

RETRY_AFTER_S: Final = 1


class Refusal(Exception):
    """A request refused: the HTTP status, a stable code, a message, extra fields."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = {k: v for k, v in fields.items() if v is not None}

    @property
    def index(self) -> int | None:
        index = self.fields.get("index")
        return index if isinstance(index, int) else None

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.fields}

    def response(self) -> web.Response:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status == 503 else None
        return json_response(self.body(), status=self.status, headers=headers)


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    try:
        text = orjson.dumps(body)
    except orjson.JSONEncodeError:  # an int beyond 64 bits (a very large sum)
        text = json.dumps(body, separators=(",", ":")).encode()
    return web.Response(body=text, status=status, headers=headers, content_type="application/json")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, or a 413 ``Refusal`` if it is over ``max_bytes``."""
    too_large = Refusal(413, "request_too_large", f"the body is over {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
