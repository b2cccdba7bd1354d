"""The launcher behind `make run`: a process that dies is started again while the others keep
running; one that keeps dying stops the platform."""

import sys
import threading
import time

from liminal.run import Supervisor

STAYS_UP = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_process_that_dies_is_restarted_and_the_others_keep_running(tmp_path):
    starts = tmp_path / "starts"
    # Dies on its first start (as a SIGKILLed worker would), stays up on the second.
    flaky = [
        sys.executable,
        "-c",
        f"import os, signal, time; p = {str(starts)!r}; n = len(open(p).read()) if os.path.exists(p) else 0; "
        "open(p, 'a').write('x'); os.kill(os.getpid(), signal.SIGKILL) if n == 0 else time.sleep(60)",
    ]
    supervisor = Supervisor({"web": STAYS_UP, "inference": flaky})
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while not (starts.exists() and len(starts.read_text()) == 2):
            assert time.monotonic() < deadline, "the dead process was not started again"
            time.sleep(0.1)
        web = supervisor.processes["web"]
        time.sleep(1)
        assert web.poll() is None and supervisor.processes["web"] is web  # never restarted
        assert supervisor.processes["inference"].poll() is None
        assert len(supervisor.restarts["inference"]) == 1 and not supervisor.stopping.is_set()
    finally:
        supervisor.stopping.set()
        runner.join(timeout=30)
    assert all(proc.poll() is not None for proc in supervisor.processes.values())


def test_a_crash_loop_stops_the_platform_with_its_exit_code():
    supervisor = Supervisor(
        {"web": STAYS_UP, "inference": [sys.executable, "-c", "raise SystemExit(3)"]}, restart_limit=2, window_s=30
    )
    started = time.monotonic()
    assert supervisor.run() == 3
    assert time.monotonic() - started < 25
    assert len(supervisor.restarts["inference"]) == 2
    assert supervisor.processes["web"].poll() is not None  # stopped with the rest
