"""`make infra-status` (python -m liminal.infra status) says PostgreSQL is running only when the
process `postmaster.pid` names is alive and is that data directory's postgres: a crash leaves
the file behind, and its pid may since have gone to another process."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liminal import infra


@pytest.fixture
def pgdata(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMINAL_VAR_DIR", str(tmp_path / "var"))
    return infra._pgdata()


def _status(capsys) -> str:
    assert infra.main(["status"]) == 0
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("postgres:"))


def _pid_file(pgdata, pid: int) -> None:
    (pgdata / "postmaster.pid").write_text(f"{pid}\n{pgdata}\n1796627040\n5432\n{pgdata}\n\n  5367568 9\nready\n")


@pytest.fixture
def process_named(tmp_path):
    """Start a long sleep whose process name is `name`, working in `cwd`; stopped afterwards."""
    started = []

    def start(name: str, cwd) -> int:
        link = tmp_path / "bin" / name
        link.parent.mkdir(exist_ok=True)
        if not link.exists():
            link.symlink_to(subprocess.run(["which", "sleep"], capture_output=True, text=True).stdout.strip())
        process = subprocess.Popen([str(link), "60"], cwd=cwd)
        started.append(process)
        # Popen returns once the child is forked, maybe before it has exec'd the link: until
        # then its name is still python's (a full suite's load made that window visible).
        comm = Path("/proc", str(process.pid), "comm")
        deadline = time.monotonic() + 10
        while comm.exists() and comm.read_text().strip() != name and time.monotonic() < deadline:
            time.sleep(0.01)
        return process.pid

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_stale_pid_file_left_by_a_crash_reads_as_stopped(pgdata, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _pid_file(pgdata, dead.pid)
    assert _status(capsys) == "postgres: stopped"
    assert infra.stop_postgres() is False  # nothing to stop, and no pg_ctl error about it


def test_a_pid_reused_by_another_process_reads_as_stopped(pgdata, capsys):
    _pid_file(pgdata, os.getpid())  # alive, but this is python, not postgres
    assert _status(capsys) == "postgres: stopped"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs to tell processes apart")
def test_only_this_data_directorys_live_postgres_reads_as_running(pgdata, tmp_path, capsys, process_named):
    other_dir = tmp_path / "other-cluster"
    other_dir.mkdir()
    _pid_file(pgdata, process_named("postgres", other_dir))  # another cluster's server
    assert _status(capsys) == "postgres: stopped"
    _pid_file(pgdata, process_named("postgres", pgdata))
    assert _status(capsys) == "postgres: running"


def test_no_pid_file_or_a_garbled_one_reads_as_stopped(pgdata, capsys):
    assert _status(capsys) == "postgres: stopped"
    (pgdata / "postmaster.pid").write_text("not a pid\n")
    assert _status(capsys) == "postgres: stopped"
    _pid_file(pgdata, 0)  # kill(0) would signal our own process group
    assert _status(capsys) == "postgres: stopped"
