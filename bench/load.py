"""Load test: many answers streaming at once over WebSocket and SSE, through the whole platform.

    .venv/bin/python bench/load.py [--streams 16] [--rounds 2] [--max-tokens 64]

A real Daphne server and a real Celery inference worker (started as `liminal/run.py` starts
them, with as many engine slots and worker threads as streams) against the development
database. Half the streams use the `/v1/chat/stream` WebSocket, half `POST /v1/chat` with
`stream: true` (server-sent events), spread over users two streams each. Each round starts them
all at once. Printed: errors (a stream that did not end with its done event, or ended in
error), mismatches (streamed text different from the answer stored in the database), and time
to first token at p50/p95, beside the reference measured in the same run: the same requests
one at a time on an idle platform. Figures are printed, never asserted.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liminal.settings")
os.environ.setdefault("DEBUG", "1")

from chat import PROMPTS, Platform, percentile  # noqa: E402  (bench/chat.py)


def ws_stream(port: int, token: str, text: str) -> dict:
    from websockets.sync.client import connect

    started = time.perf_counter()
    first, streamed = None, ""
    with connect(f"ws://127.0.0.1:{port}/v1/chat/stream", origin=f"http://127.0.0.1:{port}") as ws:
        ws.send(json.dumps({"access_token": token, "message": {"content": text}}))
        for raw in ws:
            frame = json.loads(raw)
            if frame["event"] == "token":
                first = first if first is not None else time.perf_counter() - started
                streamed += frame["data"]  # the API socket sends a token as a plain string
            elif frame["event"] == "message_done":
                return {"first": first, "text": streamed, "done": frame["data"], "transport": "WebSocket"}
            elif frame["event"] == "error":
                raise RuntimeError(f"error frame: {frame['data']}")
    raise RuntimeError("the socket closed before message_done")


def sse_stream(port: int, token: str, text: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat",
        data=json.dumps({"message": {"content": text}, "stream": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    started = time.perf_counter()
    first, streamed, event = None, "", None
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                data = json.loads(line[6:])
                if event == "token":
                    first = first if first is not None else time.perf_counter() - started
                    streamed += data["text"]
                elif event == "message_done":
                    return {"first": first, "text": streamed, "done": data, "transport": "SSE"}
                elif event == "error":
                    raise RuntimeError(f"error event: {data}")
    raise RuntimeError("the stream ended before message_done")


def stored_content(message_id) -> tuple[str, str]:
    from apps.conversations.models import Message

    message = Message.objects.get(pk=message_id)
    return message.content, message.status


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ["ENGINE_BATCH_SLOTS"] = os.environ["INFERENCE_CONCURRENCY"] = str(args.streams)

    import django

    django.setup()
    from apps.accounts.models import User
    from apps.accounts.services import auth_session_start, user_create

    users = (args.streams + 1) // 2
    tokens = []
    for i in range(users):
        email = f"load-{i}@liminal.bench"
        user = User.objects.filter(email=email).first() or user_create(email=email, password="bench password 123")
        tokens.append(auth_session_start(user=user)["access_token"])
    print(
        f"cores: {os.cpu_count()}  load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}  "
        f"streams: {args.streams} ({users} users)  rounds: {args.rounds}  max tokens: {args.max_tokens}",
        flush=True,
    )
    platform = Platform(args.max_tokens, 3)
    try:
        for text in PROMPTS:  # warm the engine on the prompt buckets
            ws_stream(platform.port, tokens[0], text)
        platform.wait_idle()
        reference = []
        for i in range(8):  # the reference: one at a time, each on an idle platform
            run = (ws_stream if i % 2 else sse_stream)(platform.port, tokens[0], PROMPTS[i % len(PROMPTS)])
            reference.append(run["first"])
            platform.wait_idle()

        results, errors = [], []

        def one(n):
            stream = ws_stream if n % 2 else sse_stream
            try:
                results.append(stream(platform.port, tokens[n // 2], PROMPTS[n % len(PROMPTS)]))
            except Exception as exc:  # a failed stream is a finding, not a crash
                errors.append(f"stream {n}: {exc!r}")

        started = time.perf_counter()
        for _ in range(args.rounds):
            threads = [threading.Thread(target=one, args=(n,)) for n in range(args.streams)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        wall = time.perf_counter() - started
        platform.wait_idle()
    finally:
        platform.stop()

    mismatches, failed = [], []
    for run in results:
        content, status = stored_content(run["done"]["message_id"])
        if status != "complete" or run["done"].get("status") not in (None, "complete"):
            failed.append(f"{run['transport']} {run['done']['message_id']}: {status}")
        elif content != run["text"]:
            mismatches.append(f"{run['transport']} {run['done']['message_id']}")
    firsts = [run["first"] for run in results if run["first"] is not None]
    tokens_out = sum(run["done"].get("usage", {}).get("completion_tokens", 0) for run in results)
    ms = lambda v: f"{v * 1000:8.1f} ms"  # noqa: E731
    over_sse = sum(run["transport"] == "SSE" for run in results)
    idle_p50, idle_p95 = statistics.median(reference), percentile(reference, 0.95)
    print()
    print(
        f"{len(results)} answers of {args.streams * args.rounds} streamed ({over_sse} over SSE), "
        f"{tokens_out} tokens in {wall:.1f} s: {tokens_out / wall:.1f} tokens/s"
    )
    print(f"  errors: {len(errors)}   not complete: {len(failed)}   streamed text != stored text: {len(mismatches)}")
    for line in (errors + failed + mismatches)[:10]:
        print(f"    {line}")
    print("Time to first token                              p50          p95")
    print(f"  one at a time, idle platform (reference) {ms(idle_p50)} {ms(idle_p95)}")
    if firsts:
        print(
            f"  {args.streams} at once                              {ms(statistics.median(firsts))} "
            f"{ms(percentile(firsts, 0.95))}"
        )


if __name__ == "__main__":
    main()
