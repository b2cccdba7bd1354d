"""Run the whole platform in the foreground: web, Celery workers, beat and Flower.

    python -m liminal.run            (what `make run` calls after migrating)

Ctrl-C (or SIGTERM) stops every process cleanly: each gets SIGTERM, then SIGKILL after a
grace period. If one process dies, the others are stopped too, so a broken platform never
half-runs.

The web server and the inference worker run at normal CPU priority; the batch worker, beat and
Flower at the lowest, so they only take the cores the chat path leaves idle.

Flower asks for a login (HTTP basic auth): FLOWER_BASIC_AUTH (`user:password`) when set, else a
password generated on the first run into var/flower-credentials and printed at start.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

from liminal import infra

GRACE_SECONDS = 20
# Ingestion, clustering and training run JAX, which sizes its thread pool to every core as the
# inference engine does, and the engine's kernels spin-wait for their partner thread: on 2 cores
# an embedding job at the same priority took the engine's time to first token from 53 to 133 ms;
# at niceness 19 it stayed at 53-61 ms (bench/README.md, 2026-12-04).
BACKGROUND_NICENESS = 19


def low_priority(argv: list[str]) -> list[str]:
    nice = shutil.which("nice")
    return [nice, "-n", str(BACKGROUND_NICENESS), *argv] if nice else argv


def commands(port: str, flower_port: str) -> dict[str, list[str]]:
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "liminal"]
    return {
        "web": [
            python,
            "-m",
            "daphne",
            "-b",
            os.environ.get("BIND", "127.0.0.1"),
            "-p",
            port,
            "liminal.asgi:application",
        ],
        # One engine per process, and JAX must never be forked: a threads pool, so concurrent
        # answers submit to the same engine and share its decode batches.
        "inference": celery
        + [
            "worker",
            "-Q",
            "inference",
            "--pool",
            "threads",
            "--concurrency",
            os.environ.get("INFERENCE_CONCURRENCY", "8"),
            "-n",
            "inference@%h",
            "--loglevel",
            "INFO",
        ],
        # Ingestion has a worker of its own: slow files once held both threads of a shared
        # worker, and `default` (beat's reapers, trigger checks) waited behind them.
        "ingest": low_priority(
            celery
            + [
                "worker",
                "-Q",
                "ingest",
                "--pool",
                "threads",
                "--concurrency",
                os.environ.get("INGEST_CONCURRENCY", "2"),
                "-n",
                "ingest@%h",
                "--loglevel",
                "INFO",
            ]
        ),
        "worker": low_priority(
            celery
            + [
                "worker",
                "-Q",
                "default,cluster,train",
                "--pool",
                "threads",
                "--concurrency",
                os.environ.get("WORKER_CONCURRENCY", "2"),
                "-n",
                "worker@%h",
                "--loglevel",
                "INFO",
            ]
        ),
        "beat": low_priority(
            celery + ["beat", "--loglevel", "INFO", "-s", str(infra.var_dir() / "celerybeat-schedule")]
        ),
        "flower": low_priority(celery + ["flower", f"--port={flower_port}", "--address=127.0.0.1"]),
    }


def _pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:>9} | {line.decode(errors='replace')}")
        sys.stdout.flush()


# A process that dies is started again (an inference worker killed by the OOM killer or by hand
# must not take the web server down with it); one that dies this many times within the window
# is crash-looping, and the platform stops with its exit code.
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0


class Supervisor:
    """Starts the platform's processes, restarts any that exits, and stops them all together."""

    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        env: dict[str, dict[str, str]] | None = None,
        restart_limit=RESTART_LIMIT,
        window_s=RESTART_WINDOW_S,
    ):
        self.commands = commands
        self.env = env or {}  # extra environment of one process (a secret only it needs)
        self.restart_limit, self.window_s = restart_limit, window_s
        self.processes: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, list[float]] = {name: [] for name in commands}
        self.stopping = threading.Event()

    def _start(self, name: str) -> None:
        # Each process leads its own process group (stopping it stops its children) but stays in
        # this session: on Linux a new session is also a new scheduler autogroup, and niceness
        # only orders processes within one group.
        proc = subprocess.Popen(
            self.commands[name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
            env={**os.environ, **self.env.get(name, {})},
        )
        self.processes[name] = proc
        threading.Thread(target=_pump, args=(name, proc.stdout), daemon=True).start()

    def _on_exit(self, name: str, code: int) -> int | None:
        """Restart `name`, or return the platform's exit code when it is crash-looping."""
        now = time.monotonic()
        recent = [t for t in self.restarts[name] if now - t < self.window_s]
        if len(recent) >= self.restart_limit:
            print(
                f"{name} exited with {code} {len(recent) + 1} times within {self.window_s:.0f} s; "
                "stopping the platform.",
                flush=True,
            )
            return code or 1
        self.restarts[name] = [*recent, now]
        print(f"{name} exited with {code}; starting it again (restart {len(recent) + 1}).", flush=True)
        self._start(name)
        return None

    def run(self) -> int:
        for name in self.commands:
            self._start(name)
        exit_code = 0
        while not self.stopping.is_set():
            for name, proc in list(self.processes.items()):
                if proc.poll() is not None and not self.stopping.is_set():
                    code = self._on_exit(name, proc.returncode)
                    if code is not None:
                        exit_code = code
                        self.stopping.set()
                        break
            self.stopping.wait(0.5)
        self.stop_all()
        return exit_code

    def stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for name, proc in self.processes.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in {GRACE_SECONDS}s; killing it.", flush=True)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


FLOWER_USER = "admin"


def flower_credentials() -> tuple[str, str | None]:
    """Flower's basic-auth setting (`user:password`) and, when it was generated here rather than
    given in FLOWER_BASIC_AUTH, the file that keeps it (owner-only, reused on every run)."""
    given = os.environ.get("FLOWER_BASIC_AUTH")
    if given:
        return given, None
    path = infra.var_dir() / "flower-credentials"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{FLOWER_USER}:{secrets.token_urlsafe(18)}\n")
    return path.read_text().strip(), str(path)


def main() -> int:
    port = os.environ.get("PORT", "8000")
    flower_port = os.environ.get("FLOWER_PORT", "5555")
    flower_auth, kept_in = flower_credentials()
    supervisor = Supervisor(commands(port, flower_port), env={"flower": {"FLOWER_BASIC_AUTH": flower_auth}})

    def stop(*_):
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"Liminal is starting: http://localhost:{port}/  (Flower: http://localhost:{flower_port}/)", flush=True)
    if kept_in:
        user, _, password = flower_auth.partition(":")
        print(f"Flower login: user {user}, password {password} (kept in {kept_in})", flush=True)
    else:
        print("Flower login: the credentials in FLOWER_BASIC_AUTH", flush=True)
    exit_code = supervisor.run()
    print("Liminal stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
