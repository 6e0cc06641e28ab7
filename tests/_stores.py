"""The job-store backends of the tests: `store_at(url)`, and a real Postgres server from
Debian's `postgresql` binaries, in a temp directory.

`make test` installs the package when `initdb` is missing (`make setup-postgres`). initdb and
the server refuse to run as root, so as root they run as the `postgres` user (made by the
package), else as the current user. The server listens on 127.0.0.1 at a free port and on a
socket in its directory, with password authentication and durability off (fsync): a test
server, fast. It is stopped by its pid (SIGINT: Postgres's fast shutdown) and also ends when
the test process dies (`die_with_parent`).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from mipro._parent_death import die_with_parent
from mipro._settings import Settings
from mipro._stack import free_port
from orchestrator._secrets import EnvKeyVault
from orchestrator._store import JobStore
from orchestrator._store_factory import make_store

#: Set by `make test`: a missing Postgres fails the tests instead of skipping them.
REQUIRE_VARIABLE = "MIPRO_TEST_REQUIRE_POSTGRES"


def store_at(url: str, *, vault: EnvKeyVault | None = None) -> JobStore:
    """The store `MIPRO_DATABASE_URL=url` gives the orchestrator (not yet open)."""
    return make_store(Settings.from_env({"MIPRO_DATABASE_URL": url}), vault=vault)


def find_bindir() -> Path | None:
    """The newest Postgres `bin` directory: Debian's `/usr/lib/postgresql/N/bin`, or the
    directory of an `initdb` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name
                   .isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


@dataclass
class PostgresServer:
    """A running test server; `url(schema)` connects with `search_path` set to `schema`."""

    directory: Path
    port: int
    user: str
    password: str
    process: subprocess.Popen[bytes]

    def url(self, dbname: str = "mipro_test", *, schema: str = "") -> str:
        options = f"?options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{dbname}{options}"

    def new_schema(self) -> str:
        """A fresh empty schema's URL: each test gets its own tables in one database."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}".encode())
        return self.url(schema=name)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run Postgres as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root with neither a postgres nor a nobody user")


def start_postgres(bindir: Path, *, ready_timeout: float = 60.0) -> PostgresServer:
    """initdb in a new temp directory, then the server on a free port; waits until it
    accepts connections and has the database `mipro_test`."""
    directory = Path(tempfile.mkdtemp(prefix="mipro-pg-"))
    user, password = "mipro", "pw-" + secrets.token_hex(12)
    ids = _run_as()
    (directory / "pwfile").write_text(password + "\n")
    if ids is not None:
        for path in (directory, directory / "pwfile"):
            os.chown(path, *ids)
    identity = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    subprocess.run([str(bindir / "initdb"), "-D", str(directory / "data"), "-U", user,
                    f"--pwfile={directory / 'pwfile'}", "--auth=scram-sha-256",
                    "--encoding=UTF8", "--no-sync"],
                   check=True, capture_output=True, env=env, cwd=directory, **identity)
    port = free_port()
    log = open(directory / "server.log", "wb")  # the server writes it; ours is closed below
    process = subprocess.Popen(
        [str(bindir / "postgres"), "-D", str(directory / "data"), "-h", "127.0.0.1",
         "-p", str(port), "-k", str(directory), "-c", "fsync=off",
         "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=200"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory,
        preexec_fn=die_with_parent(), **identity)
    log.close()
    server = PostgresServer(directory, port, user, password, process)
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            with psycopg.connect(server.url("postgres"), autocommit=True, connect_timeout=2) as c:
                c.execute("CREATE DATABASE mipro_test")
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = (directory / "server.log").read_text(errors="replace")[-2000:]
                server.stop()
                raise RuntimeError(f"the test Postgres did not start:\n{output}") from None
            time.sleep(0.2)
