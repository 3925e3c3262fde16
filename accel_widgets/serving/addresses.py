"""The one loopback rule: which hosts are this machine, for every part of the kit.

The server keeps authentication on beyond loopback, a target asks for a key beyond it, and an
HTTP client sends a key or a bearer token over plain http only to it: all three ask this
function, so no host counts as "this machine" for one and "exposed" for another. It lives in
the server's package because a model image carries the server alone, and the engine imports
the server's light modules anyway.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name (or none) counts as
    exposed."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
