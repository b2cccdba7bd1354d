"""Chat path benchmark: what the platform adds on top of the engine, measured in one run.

    .venv/bin/python bench/chat.py [--requests 10] [--users 8] [--max-tokens 64]

1. Engine alone (in this process): time to first token and aggregate decode throughput for the
   same prompts the platform will build (system prompt + chat template), then the engine is shut
   down so it does not compete with the worker for the CPU.
2. The whole path: a real Daphne server and a real Celery inference worker (threads pool, one
   engine) are started against the development database; clients talk JSON over the
   /v1/chat/stream WebSocket. Time to first token is measured at the client (send → first token
   frame) and compared with the engine's own figure from the same answer's receipt, so the
   platform overhead is isolated per request.
3. Aggregate tokens/s with N users chatting at once, against N concurrent engine requests.

Figures are printed, never asserted. Target: the platform adds under 50 ms median to TTFT.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liminal.settings")
os.environ.setdefault("DEBUG", "1")

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Give me a tip for learning Python.",
    "What is 12 times 12?",
    "Describe the ocean in one sentence.",
    "Why is the sky blue?",
    "Suggest a name for a cat.",
    "What does a compiler do?",
]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_alone(requests: int, users: int, max_tokens: int):
    from django.conf import settings

    from workers.llm import SamplingParams, load_engine

    engine = load_engine(settings.MODEL_PATH or None, max_batch_slots=8, max_seq_len=settings.ENGINE_MAX_SEQ_LEN)
    params = SamplingParams(greedy=True, max_tokens=max_tokens)

    def prompt(text):
        return engine.render_chat(
            [{"role": "system", "content": settings.CHAT_SYSTEM_PROMPT}, {"role": "user", "content": text}]
        )

    for text in PROMPTS:  # warm every prompt-length bucket the run will use
        engine.generate(prompt(text), params)
    ttfts = []
    for i in range(requests):
        started = time.perf_counter()
        handle = engine.submit(prompt(PROMPTS[i % len(PROMPTS)]), params=params)
        first = None
        for _ in handle:
            if first is None:
                first = time.perf_counter() - started
        handle.result()
        ttfts.append(first)

    started = time.perf_counter()
    handles = [engine.submit(prompt(PROMPTS[i % len(PROMPTS)]), params=params) for i in range(users)]
    tokens = sum(h.result().completion_tokens for h in handles)
    aggregate = tokens / (time.perf_counter() - started)
    engine.shutdown()
    return ttfts, aggregate, tokens


class Platform:
    """A web server and an inference worker, as `make run` starts them."""

    def __init__(self, max_tokens: int, users: int):
        self.port = free_port()
        self.logs = Path(tempfile.mkdtemp(prefix="liminal-bench-"))
        env = {
            **os.environ,
            "CHAT_MAX_TOKENS": str(max_tokens),
            "CHAT_TEMPERATURE": "0",
            "CHAT_REPETITION_PENALTY": "1.0",
            "CHAT_MAX_CONCURRENT_PER_USER": str(users),
            "RATE_LIMIT_CHAT": "100000",
            "PYTHONUNBUFFERED": "1",
        }
        python = sys.executable
        self.processes = []
        try:
            self._start(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "liminal",
                    "worker",
                    "-Q",
                    "inference",
                    "--pool",
                    "threads",
                    "--concurrency",
                    "8",
                    "-n",
                    f"bench-{os.getpid()}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--loglevel",
                    "INFO",
                ],
                env,
                "ready.",
            )
            self._start(
                "web",
                [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "liminal.asgi:application"],
                env,
                "Listening on TCP address",
            )
        except BaseException:
            self.stop()
            raise

    def _start(self, name, argv, env, ready_marker):
        log_path = self.logs / f"{name}.log"
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
        self.processes.append(process)
        deadline = time.monotonic() + 120
        while ready_marker not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log_path}")
            time.sleep(0.2)

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def ws_chat(port: int, token: str, text: str):
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/chat/stream", origin=f"http://127.0.0.1:{port}") as ws:
        started = time.perf_counter()
        await ws.send(json.dumps({"access_token": token, "message": {"content": text}}))
        first = None
        async for raw in ws:
            frame = json.loads(raw)
            if frame["event"] == "token" and first is None:
                first = time.perf_counter() - started
            elif frame["event"] == "message_done":
                return first, frame["data"], time.perf_counter() - started
            elif frame["event"] == "error":
                raise RuntimeError(frame["data"])
    raise RuntimeError("socket closed without message_done")


def platform_runs(requests: int, users: int, max_tokens: int):
    import django

    django.setup()
    from apps.accounts.models import User
    from apps.accounts.services import auth_session_start, user_create

    def bench_user(i):
        email = f"bench-{i}@liminal.bench"
        user = User.objects.filter(email=email).first() or user_create(email=email, password="bench password 123")
        return auth_session_start(user=user)["access_token"]

    tokens = [bench_user(i) for i in range(users)]
    platform = Platform(max_tokens, users)
    try:
        for text in PROMPTS:  # warm the worker's engine on the same buckets
            asyncio.run(ws_chat(platform.port, tokens[0], text))
        client_ttft, engine_ttft, queue_wait, prompt_build = [], [], [], []
        for i in range(requests):
            first, data, _ = asyncio.run(ws_chat(platform.port, tokens[0], PROMPTS[i % len(PROMPTS)]))
            client_ttft.append(first)
            engine_ttft.append(data["receipt"]["time_to_first_token_ms"] / 1000)
            queue_wait.append(data["receipt"]["queue_wait_ms"] / 1000)
            prompt_build.append(data["receipt"]["prompt_build_ms"] / 1000)
        print(
            f"  breakdown (median): saved → worker picked up {statistics.median(queue_wait) * 1000:.1f} ms, "
            f"prompt built in {statistics.median(prompt_build) * 1000:.1f} ms"
        )

        async def everyone():
            return await asyncio.gather(
                *(ws_chat(platform.port, tokens[u], PROMPTS[u % len(PROMPTS)]) for u in range(users))
            )

        started = time.perf_counter()
        results = asyncio.run(everyone())
        wall = time.perf_counter() - started
        generated = sum(data["usage"]["completion_tokens"] for _, data, _ in results)
        return client_ttft, engine_ttft, generated / wall, generated
    finally:
        platform.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    import django

    django.setup()
    print(f"cores: {os.cpu_count()}  requests: {args.requests}  users: {args.users}  max tokens: {args.max_tokens}")
    print("1/3 engine alone ...", flush=True)
    alone_ttft, alone_aggregate, alone_tokens = engine_alone(args.requests, args.users, args.max_tokens)
    print("2/3 and 3/3 whole platform (daphne + celery inference worker) ...", flush=True)
    client_ttft, receipt_ttft, platform_aggregate, platform_tokens = platform_runs(
        args.requests, args.users, args.max_tokens
    )
    overhead = [c - e for c, e in zip(client_ttft, receipt_ttft, strict=True)]

    ms = lambda v: f"{v * 1000:8.1f} ms"  # noqa: E731
    print()
    print("Time to first token                     median        p95")
    for label, values in (
        ("engine alone (this process)        ", alone_ttft),
        ("engine, inside the worker (receipt)", receipt_ttft),
        ("whole path, at the client          ", client_ttft),
    ):
        print(f"  {label} {ms(statistics.median(values))} {ms(percentile(values, 0.95))}")
    median_overhead = statistics.median(overhead)
    verdict = "meets" if median_overhead < 0.050 else "misses"
    print(
        f"  platform overhead (client - receipt){ms(median_overhead)} {ms(percentile(overhead, 0.95))}"
        f"   target < 50 ms median: {verdict}"
    )
    print()
    print(f"Aggregate decode with {args.users} concurrent chats")
    print(f"  engine alone: {alone_aggregate:7.1f} tokens/s ({alone_tokens} tokens)")
    print(
        f"  platform:     {platform_aggregate:7.1f} tokens/s ({platform_tokens} tokens, "
        f"{platform_aggregate / alone_aggregate:.0%} of the engine alone)"
    )


if __name__ == "__main__":
    main()
