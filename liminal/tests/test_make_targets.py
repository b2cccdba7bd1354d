"""The Makefile's operations targets, run as an operator runs them: `make infra-status` and
`make infra-stop` in a plain environment (no DEBUG, no SECRET_KEY), `make clean` stopping the
embedded servers before deleting their data, and `make run` stopping every process on SIGTERM as
on Ctrl-C.

`make -o venv` skips the virtualenv step: the checkout's requirements may be newer than the
virtualenv, and a test must not install packages. Servers and data live in a temporary
LIMINAL_VAR_DIR, never in the var/ that other test runs share."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from liminal import infra

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
VENV_PYTHON = PROJECT_ROOT / ".venv" / "bin" / "python"


def _plain_env(var_dir: Path, **extra) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"} and not key.startswith(("DATABASE_", "REDIS_"))
    }
    return {**env, "LIMINAL_VAR_DIR": str(var_dir), **extra}


def _make(*args, env: dict, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "venv", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _start_servers(var_dir: Path, monkeypatch) -> tuple[int, int]:
    """Embedded PostgreSQL and Valkey under `var_dir`; their process ids."""
    monkeypatch.setenv("LIMINAL_VAR_DIR", str(var_dir))
    infra.ensure_postgres()
    infra.ensure_redis()
    postgres_pid = int((var_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    valkey_pid = infra._read_redis_state()["pid"]
    assert _alive(postgres_pid) and _alive(valkey_pid)
    return postgres_pid, valkey_pid


def _wait_dead(pids, timeout=30) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[pid for pid in pids if _alive(pid)]}"
        time.sleep(0.1)


def test_infra_status_and_stop_work_in_a_plain_environment(tmp_path, monkeypatch):
    var_dir = tmp_path / "var"
    env = _plain_env(var_dir)
    status = _make("infra-status", env=env)
    assert status.returncode == 0, status.stderr
    assert "postgres: stopped" in status.stdout and "redis: stopped" in status.stdout
    assert not (var_dir / "postgres" / "postmaster.pid").exists(), "asking for the status started a server"

    pids = _start_servers(var_dir, monkeypatch)
    try:
        status = _make("infra-status", env=env)
        assert status.returncode == 0, status.stderr
        assert "postgres: running" in status.stdout and "redis: running on port" in status.stdout
        stop = _make("infra-stop", env=env)
        assert stop.returncode == 0, stop.stderr
        assert "postgres: stopped" in stop.stdout and "redis: stopped" in stop.stdout
        _wait_dead(pids)
    finally:
        infra.stop_postgres()
        infra.stop_redis()


def test_clean_stops_the_embedded_servers_before_deleting_their_data(tmp_path, monkeypatch):
    var_dir = tmp_path / "var"
    pids = _start_servers(var_dir, monkeypatch)
    # A stand-in virtualenv (clean deletes it) whose python is the real one.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec {VENV_PYTHON} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    try:
        clean = _make("clean", f"VENV={venv}", env=_plain_env(var_dir))
        assert clean.returncode == 0, clean.stderr
        assert "postgres: stopped" in clean.stdout and "redis: stopped" in clean.stdout
        assert not any(_alive(pid) for pid in pids), "a server outlived make clean"
        assert not var_dir.exists() and not venv.exists()
    finally:
        if var_dir.exists():
            infra.stop_postgres()
            infra.stop_redis()


# Stand-ins for the platform's processes: each notes its pid, and on SIGTERM notes that it was
# asked to stop (rather than killed after the grace period) and exits.
STAND_IN = (
    "import os, signal, sys, time\n"
    "log = sys.argv[1]\n"
    "def stop(*_):\n"
    "    open(log, 'a').write(f'stopped {os.getpid()}\\n'); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "open(log, 'a').write(f'started {os.getpid()}\\n')\n"
    "time.sleep(300)\n"
)
# `make run`'s python: the manage.py steps succeed at once; `-m liminal.run` is the real launcher
# with stand-ins for web, workers, beat and Flower.
FAKE_PYTHON = '#!/bin/sh\n[ "$1" = manage.py ] && exit 0\nexec {python} {launcher}\n'
LAUNCHER = """import sys
sys.path.insert(0, {root!r})
from liminal import run
run.commands = lambda port, flower_port: {{name: [sys.executable, "-c", {stand_in!r}, {log!r}] for name in {names!r}}}
sys.exit(run.main())
"""


@pytest.mark.parametrize("how", ["SIGTERM to make", "Ctrl-C"])
def test_make_run_stops_every_process_on_sigterm_as_on_ctrl_c(tmp_path, how):
    names = ["web", "inference", "ingest", "worker", "beat", "flower"]
    log = tmp_path / "processes.log"
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(root=str(PROJECT_ROOT), stand_in=STAND_IN, log=str(log), names=names))
    fake_python = tmp_path / "python"
    fake_python.write_text(FAKE_PYTHON.format(python=VENV_PYTHON, launcher=launcher))
    fake_python.chmod(0o755)
    # Its own session, as a terminal's foreground job has its own process group.
    make = subprocess.Popen(
        ["make", "--no-print-directory", "-o", "venv", "run", f"PY={fake_python}"],
        cwd=PROJECT_ROOT,
        env=_plain_env(tmp_path / "var"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not log.exists() or log.read_text().count("started") < len(names):
            assert make.poll() is None, make.stdout.read()
            assert time.monotonic() < deadline, "the platform's processes did not all start"
            time.sleep(0.1)
        pids = [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("started")]
        if how == "Ctrl-C":
            os.killpg(make.pid, signal.SIGINT)  # the terminal signals its foreground process group
        else:
            make.send_signal(signal.SIGTERM)  # a service manager or `kill` signals make alone
        output, _ = make.communicate(timeout=60)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    try:
        _wait_dead(pids, timeout=10)
    finally:
        for pid in filter(_alive, pids):
            os.kill(pid, signal.SIGKILL)
    stopped = {int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("stopped")}
    assert stopped == set(pids), f"not asked to stop: {set(pids) - stopped}\n{output}"
    assert "Liminal stopped." in output
    assert "Flower login: user admin, password" in output and (tmp_path / "var" / "flower-credentials").exists()


@pytest.mark.slow
def test_flower_asks_for_the_login_make_run_generates(tmp_path, monkeypatch):
    from liminal import run

    flower_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "liminal.settings_test"}  # the test's servers
    monkeypatch.setenv("LIMINAL_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    credentials, kept_in = run.flower_credentials()
    assert run.flower_credentials() == (credentials, kept_in)  # generated once, then reused
    assert oct(Path(kept_in).stat().st_mode & 0o777) == "0o600"
    user, _, password = credentials.partition(":")
    assert user == "admin" and len(password) >= 20

    port = infra._free_port()
    flower = subprocess.Popen(
        run.commands("0", str(port))["flower"],
        cwd=PROJECT_ROOT,
        env={**flower_env, "FLOWER_BASIC_AUTH": credentials},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import requests

        deadline = time.monotonic() + 90
        while True:
            try:
                anonymous = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert flower.poll() is None and time.monotonic() < deadline, "Flower did not start"
                time.sleep(0.2)
        assert anonymous.status_code == 401
        assert requests.get(f"http://127.0.0.1:{port}/api/workers", timeout=5).status_code == 401
        assert requests.get(f"http://127.0.0.1:{port}/", auth=(user, "wrong"), timeout=5).status_code == 401
        assert requests.get(f"http://127.0.0.1:{port}/", auth=(user, password), timeout=30).status_code == 200
    finally:
        flower.terminate()
        flower.wait(timeout=30)
