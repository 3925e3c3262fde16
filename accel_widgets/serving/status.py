"""Request failures as gRPC status names, shared by the gRPC and REST front ends.

The model layer raises :class:`RequestError` with a gRPC status *name* (a string, so the
model code needs no gRPC import); the gRPC service turns it into a status, the REST
service into the HTTP code TF Serving's REST API uses for the same failure.
"""

from __future__ import annotations

#: Client input quoted in a refusal is cut to this many characters: a 100 kB model name or
#: input name, echoed whole, overflowed gRPC's 8 kB metadata limit and turned the refusal
#: into RESOURCE_EXHAUSTED (issue 22).
ECHO_LIMIT = 200
#: And every message to this many UTF-8 bytes, the net under messages that echo several
#: values or a long list: gRPC percent-encodes non-ASCII bytes (x3), so 1,500 bytes stay
#: under 4.5 kB of the 8 kB that a client accepts for all its response headers.
MESSAGE_BYTES = 1500

#: gRPC status name -> HTTP status for the REST front end.
HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """Client input as a refusal quotes it: a string as it is, anything else as ``repr``,
    cut to ``limit`` characters with the full length said (``xxxx... (100,000 characters)``).
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def _bounded(message: str) -> str:
    """``message`` as valid UTF-8 (a lone surrogate from JSON becomes ``\\ud800``) and at
    most :data:`MESSAGE_BYTES` long."""
    raw = message.encode("utf-8", "backslashreplace")
    if len(raw) <= MESSAGE_BYTES:
        return raw.decode("utf-8")
    return raw[: MESSAGE_BYTES - 20].decode("utf-8", "ignore") + "... (cut)"


class RequestError(Exception):
    """A request the server refuses; ``code`` is a gRPC status name such as ``NOT_FOUND``.

    The message goes back to the client as it is, so it names the bad input and the valid
    choices ("no input 'x'; inputs are 'images', 'data_0'"), and it never echoes a secret.
    Echoed input goes through :func:`echo`, and the whole message is bounded, so a refusal
    always fits in a gRPC status. ``http_status`` overrides the HTTP status the code maps to
    where HTTP has a better word (405 for a route that exists with another method).
    """

    def __init__(self, code: str, message: str, *, http_status: int | None = None) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        if self._http_status is not None:
            return self._http_status
        return HTTP_STATUS.get(self.code, 500)
