"""`mipro up` as a user starts it, and its processes as Linux shows them in /proc.

Used by the tests that kill `mipro up` and that run it from an installed wheel; every
process is found and stopped by its pid, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mipro._stack import PORT_VARIABLES, free_ports_env


def up_env(data_dir: Path) -> dict[str, str]:
    """This environment without any MIPRO_ or provider variable, plus free 127.0.0.1 ports, a
    data directory and an API key."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env.update(free_ports_env())
    env.update(MIPRO_HOST="127.0.0.1", MIPRO_DATA_DIR=str(data_dir),
               MIPRO_API_KEYS="mk_test_key", MIPRO_LOG_FORMAT="json")
    return env


def ports(env: dict[str, str]) -> list[int]:
    return [int(env[variable]) for variable in PORT_VARIABLES]


@dataclass(frozen=True)
class Proc:
    """A process as /proc/PID/stat shows it; the start time tells it from a reused pid."""

    pid: int
    ppid: int
    state: str
    start_time: int
    cmdline: str


def read_proc(pid: int) -> Proc | None:
    """The process `pid`, or None when it no longer exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2:].split()
    return Proc(pid=pid, ppid=int(fields[1]), state=fields[0], start_time=int(fields[19]),
                cmdline=cmdline.replace(b"\0", b" ").decode(errors="replace").strip())


def descendants(pid: int) -> list[Proc]:
    """Every living process below `pid` (children, their children, ...)."""
    procs = [p for entry in Path("/proc").iterdir() if entry.name.isdigit()
             if (p := read_proc(int(entry.name))) is not None]
    found: list[Proc] = []
    parents = {pid}
    while True:
        new = [p for p in procs if p.ppid in parents and p not in found]
        if not new:
            return found
        found += new
        parents = {p.pid for p in new}


def is_alive(proc: Proc) -> bool:
    """Whether `proc` still runs: same pid and start time, and not a zombie."""
    now = read_proc(proc.pid)
    return now is not None and now.start_time == proc.start_time and now.state not in "ZX"


def kill_if_alive(procs: Sequence[Proc]) -> None:
    """SIGKILL to each of `procs` that still runs, by pid."""
    for proc in procs:
        if is_alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (SO_REUSEADDR, as servers do, so
    connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def wait_ready(env: dict[str, str], process: subprocess.Popen[bytes], log: Path,
               timeout: float = 60.0) -> None:
    """Waits until the gateway's /healthz answers 200 and `mipro up` printed its `ready:`
    line (from then on it handles Ctrl-C); fails with the log if `process` exits first or
    `timeout` passes."""
    url = f"http://127.0.0.1:{env['MIPRO_GATEWAY_PORT']}/healthz"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"mipro up exited with {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if (httpx.get(url, timeout=1.0).status_code == 200
                    and any(line.startswith("ready:") for line in tail(log).splitlines())):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"mipro up was not ready at {url} within {timeout:g} s:\n"
                                 f"{tail(log)}")
        time.sleep(0.2)


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@dataclass
class RunningUp:
    """A started `mipro up` and the processes below it seen so far."""

    process: subprocess.Popen[bytes]
    log: Path
    seen: list[Proc] = field(default_factory=list)

    def children(self) -> list[Proc]:
        """The processes below it now; remembered, so they are stopped at the end even
        after they were re-parented."""
        now = descendants(self.process.pid)
        self.seen += [p for p in now if p not in self.seen]
        return now


@contextlib.contextmanager
def running_up(argv: Sequence[str], env: dict[str, str], cwd: Path,
               log: Path) -> Iterator[RunningUp]:
    """Starts `argv` (a `mipro up` command) in its own session with its output in `log`; at
    the end kills it and every process seen below it, by pid, whatever happened."""
    with open(log, "wb") as out:
        process = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    up = RunningUp(process, log)
    try:
        yield up
    finally:
        if process.poll() is None:
            up.children()
            process.kill()
        process.wait(timeout=10)
        kill_if_alive(up.seen)
