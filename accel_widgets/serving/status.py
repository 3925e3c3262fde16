"""Request failures as gRPC status names, shared by the gRPC and REST front ends.

The model layer raises :class:`RequestError` with a gRPC status *name* (a string, so the
model code needs no gRPC import); the gRPC service turns it into a status, the REST
service into the HTTP code TF Serving's REST API uses for the same failure.
"""

from __future__ import annotations

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


class RequestError(Exception):
    """A request the server refuses; ``code`` is a gRPC status name such as ``NOT_FOUND``.

    The message goes back to the client as it is, so it names the bad input and the valid
    choices ("no input 'x'; inputs are 'images', 'data_0'"), and it never echoes a secret.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)
