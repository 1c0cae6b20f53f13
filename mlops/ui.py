"""ui: Evidently's UI on the timeline workspace (``mlops ui``), until interrupted.

The service runs in this process (uvicorn, which stops cleanly on SIGINT or SIGTERM)
with Evidently's bundled web assets, its anonymous usage reporting off, and it watches
the workspace, so snapshots that monitor and label add while it runs appear on reload.
Its API can delete projects and snapshots, so it binds to loopback only, unless
Evidently's write secret (``EVIDENTLY_SECRET``) guards those calls.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any

from mlops import timeline
from mlops.config import ConfigError, Params, Settings
from mlops.serve_http import is_loopback


def _check_free(host: str, port: int) -> None:
    """Fail with the address in the message when the port is taken (uvicorn only logs it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As uvicorn binds: connections of a run just stopped, in TIME_WAIT, do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise OSError(
                f"ui: cannot listen on {host}:{port} ({exc.strerror}); pass another --port"
            ) from None


def app(params: Params, st: Settings, host: str = "127.0.0.1", port: int = timeline.PORT) -> Any:
    """The Evidently UI application on the timeline workspace (made first, if need be)."""
    from evidently.ui.service.app import create_app, get_config
    from evidently.ui.service.components.security import NoSecurityComponent

    workspace = timeline.prepare(params, st)
    config = get_config(host=host, port=port, workspace=str(workspace))
    if isinstance(config.security, NoSecurityComponent) and not is_loopback(host):
        raise ConfigError(
            f"ui: --host {host} would let anyone who reaches it delete timeline snapshots; "
            "serve on 127.0.0.1, or set EVIDENTLY_SECRET to guard writes"
        )
    # Evidently's UI otherwise posts usage events to a remote host.
    config.telemetry.enabled = False
    return create_app(config)


class _Stopped(Exception):
    """SIGTERM arrived: the service has shut down, the command ends normally."""


def _stop(signum: int, _frame: Any) -> None:
    raise _Stopped(signum)


def run(params: Params, st: Settings, host: str = "127.0.0.1", port: int = timeline.PORT) -> int:
    """Serve the timeline until SIGINT or SIGTERM; returns 0 once it has shut down."""
    import uvicorn

    _check_free(host, port)
    service = app(params, st, host, port)
    print(
        f"ui: timeline of {params.model_name} on {timeline.url(params, host=host, port=port)} "
        f"(workspace {timeline.folder(st)}); Ctrl-C stops it",
        flush=True,
    )
    # uvicorn shuts down on the signal, then raises it again: SIGTERM would end the
    # process by the signal, SIGINT with a KeyboardInterrupt. A stop is this command's end.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main else None
    try:
        uvicorn.run(service, host=host, port=port, log_level="warning", access_log=False)
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    print("ui: stopped", flush=True)
    return 0
