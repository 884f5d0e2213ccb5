"""A throwaway PostgreSQL 15 cluster for the tests: started once per session, one database per test.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user (``runuser``) in a
temporary folder that user owns. It listens on 127.0.0.1 only, on a free port, with a Unix socket in that
folder, and trusts nothing: TCP logins need the superuser's random password, which every URL carries — so
the tests that check password masking see a real password. Durability is off (``fsync=off``): the data is
thrown away anyway, and it keeps database creation fast.

The server is stopped at the end of the session, at interpreter exit, and — when the test process is killed
— by a small watchdog process that waits for the test process to disappear.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")


def find_bin_dir() -> Path:
    """PostgreSQL 15's binaries (the version the machine image ships), else the newest Debian installed."""
    if DEFAULT_BIN_DIR.is_dir():
        return DEFAULT_BIN_DIR
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else DEFAULT_BIN_DIR


DRIVER = "postgresql+psycopg"
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The cluster cannot be started here (binaries, user or driver missing, or start-up failed)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_WATCHDOG = """
import os, shutil, subprocess, sys, time
parent, pg_ctl, data, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
prefix = sys.argv[5:]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    if not os.path.isdir(folder):
        sys.exit(0)
    time.sleep(1)
if os.path.isdir(data):
    subprocess.run([*prefix, pg_ctl, "stop", "-D", data, "-m", "immediate"], capture_output=True, timeout=60)
shutil.rmtree(folder, ignore_errors=True)
"""


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder: ``start()``, ``create_database()`` per test, ``stop()``.

    Raises:
        PostgresUnavailable: from ``start`` when the cluster cannot be started (with the reason).
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = 0
        self.password = "pw-" + secrets.token_hex(8)
        self.folder: Path | None = None
        self._prefix: list[str] = []
        self._databases = 0
        self._shared_database = ""

    @property
    def data_dir(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"{DRIVER}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        try:
            import psycopg  # noqa: F401  (the driver the URLs name)
        except ImportError as exc:
            raise PostgresUnavailable(
                f'the driver is missing: pip install "modelbuilder[postgres]" ({exc})'
            ) from exc
        for tool in ("initdb", "pg_ctl"):
            if not (self.bin_dir / tool).is_file():
                raise PostgresUnavailable(
                    f"{self.bin_dir / tool} does not exist (scripts/setup.sh --with-browser installs it, "
                    "or: apt-get install -y postgresql)"
                )
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root, and runuser (to become 'postgres') is missing")
            self._prefix = ["runuser", "-u", SUPERUSER, "--"]
        self.folder = Path(tempfile.mkdtemp(prefix="mb-postgres-"))
        atexit.register(self.stop)
        try:
            self._init_cluster()
            self._start_cluster()
        except BaseException:
            self.stop()
            raise
        self._start_watchdog()
        return self

    def _run(self, *argv: str, timeout: float = 120) -> None:
        try:
            done = subprocess.run(
                [*self._prefix, *argv], capture_output=True, text=True, timeout=timeout, cwd=self.folder
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"{Path(argv[0]).name} failed: {exc}") from exc
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{Path(argv[0]).name} exited with {done.returncode}: {(done.stderr or done.stdout)[-2000:]}"
            )

    def _init_cluster(self) -> None:
        assert self.folder is not None
        self.folder.chmod(0o700)
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if self._prefix:
            shutil.chown(self.folder, SUPERUSER, SUPERUSER)
            shutil.chown(password_file, SUPERUSER, SUPERUSER)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )  # fmt: skip
        password_file.unlink()

    def _start_cluster(self) -> None:
        assert self.folder is not None
        options = " ".join(
            [
                f"-k {self.folder}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        # A port taken between _free_port and the server's bind makes pg_ctl fail: try a few.
        last: PostgresUnavailable | None = None
        for _ in range(3):
            self.port = _free_port()
            try:
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "start", "-w", "-t", "60",
                    "-D", str(self.data_dir),
                    "-l", str(self.folder / "server.log"),
                    "-o", f"{options} -p {self.port}",
                )  # fmt: skip
                return
            except PostgresUnavailable as exc:
                last = exc
        assert last is not None
        raise last

    def _start_watchdog(self) -> None:
        assert self.folder is not None
        subprocess.Popen(
            [
                sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.bin_dir / "pg_ctl"),
                str(self.data_dir), str(self.folder), *self._prefix,
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _execute(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password, dbname=database,
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(statement)  # type: ignore[arg-type]

    def _new_name(self, prefix: str) -> str:
        self._databases += 1
        return f"{prefix}_{os.getpid()}_{self._databases}_{int(time.time() * 1000) % 100000}"

    def create_database(self, prefix: str = "mb") -> str:
        """A new empty database (about 0.3 s); returns its SQLAlchemy URL."""
        name = self._new_name(prefix)
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self, prefix: str = "ws") -> str:
        """A new empty schema in the shared test database (well under a millisecond); returns a URL whose
        connections see only that schema (``search_path``), which to the store is an empty database."""
        if not self._shared_database:
            self._shared_database = self.create_database("mb_shared")
        database = self._shared_database.rsplit("/", 1)[1]
        name = self._new_name(prefix)
        self._execute(f'CREATE SCHEMA "{name}"', database)
        return f"{self._shared_database}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        """Stop the cluster and remove its folder (safe to call twice)."""
        folder, self.folder = self.folder, None
        if folder is None:
            return
        if (folder / "data" / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self._prefix,
                    str(self.bin_dir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(folder / "data"),
                    "-m",
                    "immediate",  # the data is thrown away: no shutdown checkpoint to wait for
                ],
                capture_output=True,
                timeout=60,
                cwd=folder,
            )
        shutil.rmtree(folder, ignore_errors=True)
