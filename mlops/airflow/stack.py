"""The running components of a local Airflow, each in its own process group.

``start`` launches the API server, scheduler, DAG processor and triggerer (and Celery
workers), ``wait_ready`` waits for their health, and ``Stack.stop`` ends them and every
process they started. Used by the launcher (``mlops.airflow.local``) and the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# With the LocalExecutor every log is a local file the API server reads itself, so the
# log servers (which would listen on every interface) are not started.
ARGS = {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}
# Several workers on one host report these names as the hostname of their task instances.
ENV_WORKER_NAME = "MLOPS_WORKER_NAME"


class AirflowStartError(RuntimeError):
    """A component did not start; the message names it and shows the end of its log."""


def worker_hostname() -> str:
    """The hostname a task reports: ``MLOPS_WORKER_NAME`` when set, else the FQDN.

    Set as ``[core] hostname_callable`` for Celery workers that share one host, so that
    each task instance names the worker that ran it.
    """
    name = os.environ.get(ENV_WORKER_NAME)
    if name:
        return name
    from airflow.utils.net import getfqdn

    return str(getfqdn())


def _airflow_cli() -> str:
    cli = Path(sys.executable).with_name("airflow")
    return str(cli) if cli.is_file() else "airflow"


@dataclass
class Stack:
    """Running components, each in its own process group."""

    url: str
    home: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    _files: list[IO[bytes]] = field(default_factory=list)

    def dead(self) -> dict[str, int]:
        """Components that exited, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def tail(self, name: str, chars: int = 3000) -> str:
        """The last ``chars`` characters of a component's log."""
        path = self.logs.get(name)
        return path.read_text(errors="replace")[-chars:] if path and path.is_file() else ""

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every component, then SIGKILL whatever is left of them after ``grace`` s.

        Each component leads its own session. Task processes get process groups of their
        own inside the scheduler's session, so the leftovers are found by session, not by
        process group.
        """
        for p in self.procs.values():
            if p.poll() is None:
                _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        sessions = {p.pid for p in self.procs.values()}
        for _ in range(50):
            left = _session_members(sessions)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for f in self._files:
            f.close()
        self._files.clear()


def _session_members(sessions: set[int]) -> list[int]:
    """Live processes (not zombies) in the given sessions."""
    import psutil

    out = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) in sessions and psutil.Process(pid).status() != "zombie":
                out.append(pid)
        except (OSError, psutil.Error):
            continue
    return out


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _spawn(stack: Stack, name: str, cmd: list[str], env: Mapping[str, str]) -> None:
    path = stack.home / "logs" / "components" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("ab")
    stack._files.append(fh)
    stack.logs[name] = path
    stack.procs[name] = subprocess.Popen(
        cmd,
        env=dict(env),
        cwd=REPO,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_worker(stack: Stack, env: Mapping[str, str], name: str, concurrency: int = 1) -> None:
    """Start one Celery worker called ``name``; its tasks report ``name`` as their host.

    The worker serves no logs: with every worker on this host the API server reads the
    task logs from ``$AIRFLOW_HOME/logs`` itself.
    """
    worker_env = {
        **env,
        ENV_WORKER_NAME: name,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
    }
    cmd = [
        _airflow_cli(),
        "celery",
        "worker",
        "--celery-hostname",
        f"{name}@%h",
        "--concurrency",
        str(concurrency),
        "--skip-serve-logs",
        "--without-gossip",
        "--without-mingle",
    ]
    _spawn(stack, name, cmd, worker_env)


def start(
    env: Mapping[str, str], components: tuple[str, ...] = COMPONENTS, workers: int = 0
) -> Stack:
    """Start the components and ``workers`` Celery workers (``worker-1``...); do not wait.

    Logs go to ``$AIRFLOW_HOME/logs/components/<name>.log``.
    """
    home = Path(env["AIRFLOW_HOME"])
    stack = Stack(url=env["AIRFLOW__API__BASE_URL"], home=home)
    try:
        for name in components:
            _spawn(stack, name, [_airflow_cli(), name, *ARGS.get(name, [])], env)
        for i in range(1, workers + 1):
            start_worker(stack, env, f"worker-{i}")
    except BaseException:
        stack.stop(grace=5)
        raise
    return stack


def health(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """``GET /api/v2/monitor/health``, or None while the API server is not answering."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_ready(
    stack: Stack,
    timeout: float = 240.0,
    need: tuple[str, ...] = ("metadatabase", "scheduler", "dag_processor", "triggerer"),
) -> dict[str, Any]:
    """Wait until the API answers and the ``need`` components report healthy.

    Raises:
        AirflowStartError: A component exited, or ``timeout`` passed.
    """
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        dead = stack.dead()
        if dead:
            name, code = next(iter(dead.items()))
            raise AirflowStartError(
                f"airflow {name} exited with code {code}; end of {stack.logs[name]}:\n"
                f"{stack.tail(name)}"
            )
        last = health(stack.url)
        if last and all(last.get(n, {}).get("status") == "healthy" for n in need):
            return last
        time.sleep(1.0)
    raise AirflowStartError(
        f"Airflow at {stack.url} not healthy within {timeout:.0f}s (last health: {last}); "
        f"see the logs in {stack.home / 'logs' / 'components'}"
    )


def kill(stack: Stack, name: str, session: bool = True) -> list[int]:
    """SIGKILL component ``name``; return the pids killed.

    With ``session``, every process it started goes too, task processes included (each
    has a process group of its own inside its session), as when its container or host
    dies. Without, only its main process, as ``kill -9 <pid>`` does: what it started
    lives on, orphaned, until ``kill_sessions`` of its pid. ``name`` stays in
    ``stack.procs``, exited, until ``respawn``.
    """
    proc = stack.procs[name]
    killed = kill_sessions({proc.pid}) if session else [proc.pid]
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return killed


def kill_sessions(sessions: set[int], timeout: float = 10.0) -> list[int]:
    """SIGKILL every live process of the sessions led by ``sessions``; return their pids.

    Raises:
        AirflowStartError: Some were still alive after ``timeout`` s.
    """
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while left := _session_members(sessions):
        if time.monotonic() > deadline:
            raise AirflowStartError(f"processes {left} outlived SIGKILL")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.extend(p for p in left if p not in killed)
        time.sleep(0.1)
    return killed


def respawn(stack: Stack, name: str, env: Mapping[str, str]) -> None:
    """Start the exited component ``name`` again, with the command it was started with.

    Its log goes on in the same file. ``env`` is the environment it was started with
    (``start`` does not keep it).
    """
    old = stack.procs[name]
    if old.poll() is None:
        raise AirflowStartError(f"airflow {name} is still running (pid {old.pid})")
    cmd = old.args if isinstance(old.args, list) else [old.args]
    _spawn(stack, name, [str(a) for a in cmd], env)
