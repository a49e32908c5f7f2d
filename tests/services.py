"""Private local services for integration tests: Redis, a Postgres cluster, and managed subprocesses.

Each context manager starts its service on a free 127.0.0.1 port in a fresh temporary folder and stops
it (and everything it spawned) in a `finally`, so a failing test leaves nothing running. Services are
started in their own process group/session and stopped by group: a Celery worker's pool children or a
webserver's code server die with their parent.

Postgres refuses to run as root: when the tests run as root, `initdb` / `pg_ctl` run as the `postgres`
OS user (`runuser -u postgres --`) in a temporary folder that user owns.

    with redis_server() as redis_url, postgres_server() as pg:
        pg.url        # postgresql://postgres@127.0.0.1:PORT/dagster
        pg.params     # {"hostname", "port", "username", "password", "db_name"} for dagster.yaml
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None, what: str = "service") -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening on port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


# -- managed subprocesses ----------------------------------------------------------------------
def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal the process group `proc` leads, wait, then SIGKILL the group if it is still there."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # the leader may be gone while children (pool workers, code servers) remain in its group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@dataclass
class Processes:
    """Every subprocess a test starts, each in its own session; `stop_all` stops them in reverse order."""

    procs: list[tuple[str, subprocess.Popen, int]] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict | None = None,
        cwd: str | os.PathLike | None = None,
        log: str | os.PathLike | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                list(args),
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if log:
                out.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        for i, (_, p, sig) in enumerate(self.procs):
            if p is proc:
                stop_group(p, sig)
                del self.procs[i]
                return

    def stop_all(self) -> None:
        while self.procs:
            _, p, sig = self.procs.pop()
            stop_group(p, sig)


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    ps = Processes()
    try:
        yield ps
    finally:
        ps.stop_all()


# -- Redis -------------------------------------------------------------------------------------
def redis_available() -> bool:
    return shutil.which("redis-server") is not None


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """A throw-away redis-server on 127.0.0.1 (no persistence); yields its URL `redis://127.0.0.1:PORT`."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = port or free_port()
    tmp = tempfile.mkdtemp(prefix="mmssr-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(tmp, "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port, 20, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop_group(proc, signal.SIGTERM, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


# -- Postgres ----------------------------------------------------------------------------------
def postgres_bin(name: str) -> str | None:
    """Path of a PostgreSQL server binary (Debian keeps them under /usr/lib/postgresql/<ver>/bin)."""
    found = shutil.which(name)
    if found and name not in ("initdb", "pg_ctl", "postgres"):
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: _version_key(p))
    if candidates:
        return candidates[-1]
    return found


def _version_key(path: str) -> tuple:
    part = Path(path).parent.parent.name
    return tuple(int(x) if x.isdigit() else 0 for x in part.split("."))


def postgres_available() -> bool:
    return postgres_bin("initdb") is not None and postgres_bin("pg_ctl") is not None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    db_name: str
    data_dir: str
    password: str = ""

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.db_name}"

    @property
    def params(self) -> dict:
        """`postgres_db` block of dagster.yaml (dagster-postgres storage). The scheme names psycopg2 (what
        dagster-postgres depends on): SQLAlchemy >= 2.1 maps `postgresql://` to psycopg 3."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.user,
            "password": self.password,
            "db_name": self.db_name,
            "scheme": "postgresql+psycopg2",
        }

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables the repo's Postgres dagster.yaml files read."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def dagster_storage_yaml(self) -> str:
        """The `storage:` section of a dagster.yaml pointing at this server."""
        return (
            "storage:\n  postgres:\n    postgres_db:\n"
            f"      hostname: {self.host}\n      port: {self.port}\n      username: {self.user}\n"
            f'      password: "{self.password}"\n      db_name: {self.db_name}\n'
            "      scheme: postgresql+psycopg2\n"
        )


def _as_postgres_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root but `runuser` is missing: cannot start postgres as the postgres user")
    return [runuser, "-u", "postgres", "--", *args]


@contextlib.contextmanager
def postgres_server(
    db_name: str = "dagster", port: int | None = None, *, user: str = "postgres", password: str = ""
) -> Iterator[PostgresServer]:
    """A private Postgres cluster on 127.0.0.1 with database `db_name` owned by `user`.

    Without a password: trust auth, user `postgres`. With one: TCP logins need it (scram-sha-256, like a
    real server) and `user` is created with it. The cluster lives in a fresh temporary folder (owned by the `postgres` OS user when we are root),
    listens on a free TCP port plus a unix socket in that folder, and is stopped (`pg_ctl stop -m
    immediate`) and deleted on exit.
    """
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    port = port or free_port()
    root = tempfile.mkdtemp(prefix="mmssr-pg-")
    os.chmod(root, 0o755)
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    log = os.path.join(root, "postgres.log")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    started = False
    try:
        auth = ["--auth=trust"] if not password else ["--auth-local=trust", "--auth-host=scram-sha-256"]
        subprocess.run(
            _as_postgres_user([initdb, "-D", data, "-U", "postgres", *auth, "-E", "UTF8", "--no-sync", "--locale=C"]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=root,
            timeout=120,
        )
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=root,
            timeout=90,
            start_new_session=True,
        )
        started = True
        _create_database(root, port, db_name, user, password)
        yield PostgresServer("127.0.0.1", port, user, db_name, data, password)
    except subprocess.CalledProcessError as exc:
        tail = ""
        with contextlib.suppress(OSError):
            tail = Path(log).read_text()[-2000:]
        raise RuntimeError(f"postgres failed: {exc.stderr.decode(errors='replace')[-2000:]}\n{tail}") from None
    finally:
        if started or os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(
                _as_postgres_user([pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=root,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


def _create_database(socket_dir: str, port: int, db_name: str, user: str, password: str) -> None:
    """Create `user` (unless it is the superuser) and `db_name` owned by it, over the unix socket (trust)."""
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg2.connect(host=socket_dir, port=port, user="postgres", dbname="postgres")
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            if user != "postgres":
                cur.execute(f'CREATE USER "{user}" PASSWORD %s', (password or None,))
            elif password:
                cur.execute("ALTER USER postgres PASSWORD %s", (password,))
            cur.execute(f'CREATE DATABASE "{db_name}" OWNER "{user}"')
    finally:
        conn.close()
