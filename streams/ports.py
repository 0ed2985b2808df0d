"""Free TCP ports on the loopback interface (standard library only).

Here rather than in `deploy/engines` because the installed package needs it
(the embedded broker, the demo's health server) and ships without
`deploy/`; the engine launchers in `deploy/engines` import it from here.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK, avoid: Sequence[int] = ()) -> int:
    """A port nothing listens on now: the kernel's pick, never one in ``avoid``.

    ``avoid`` is for several ports picked before any is bound (a broker's
    client and controller ports), where the kernel may hand out one twice.
    The port may be taken by another process before the caller binds it.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port
