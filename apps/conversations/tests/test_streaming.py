"""How a worker sends an answer's events: the first token from the engine's own thread, the
steps' trace entries held until it has gone, and nothing sent twice or out of order."""

import concurrent.futures
import threading
import time

import pytest

from apps.conversations import inference, streaming
from apps.conversations.inference import FirstTokenRelay, stream_handle
from apps.conversations.streaming import HeldTraces
from workers.llm.engine import TokenEvent


@pytest.fixture
def sent(monkeypatch):
    """Every event published, in order, with the thread that published it; sends complete at once."""
    events = []

    def publish(key, event, **_):
        events.append((key, event, threading.current_thread().name))
        future = concurrent.futures.Future()
        future.set_result(None)
        return future

    monkeypatch.setattr(streaming, "publish", publish)
    monkeypatch.setattr(inference, "publish", publish)
    return events


class FakeEngine:
    """Calls `on_token` on its own thread before queueing each event, as the engine does."""

    def __init__(self, texts, on_token):
        self.events = [TokenEvent(index=i, token_id=i, text=t, logprob=0.0) for i, t in enumerate(texts)]
        self.on_token = on_token
        self.queue: list = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="engine")
        self.thread.start()

    def _run(self):
        for event in self.events:
            self.on_token(event)
            self.queue.append(event)
        self.done.set()

    def __iter__(self):
        index = 0
        while not (self.done.is_set() and index == len(self.queue)):
            if index < len(self.queue):
                yield self.queue[index]
                index += 1
            else:
                time.sleep(0.001)


def test_the_first_text_goes_out_from_the_engines_thread_once_and_the_rest_in_order(sent):
    texts = ["", "Par", "is", " is", " the", " capital", "."]
    relay = FirstTokenRelay("answer-1")
    engine = FakeEngine(texts, relay)
    firsts = []
    streamed = stream_handle(engine, "answer-1", on_first=lambda: firsts.append(1), relay=relay)
    engine.thread.join()

    assert streamed == "Paris is the capital."
    tokens = [(event["text"], thread) for _, event, thread in sent if event["type"] == "gen.token"]
    assert tokens[0] == ("Par", "engine")  # the first non-empty text, before the engine went on
    assert "".join(text for text, _ in tokens) == streamed  # nothing twice, nothing lost
    assert all(thread != "engine" for _, thread in tokens[1:])
    assert firsts == [1]


def test_without_a_relay_every_token_goes_out_from_the_streaming_thread(sent):
    engine = FakeEngine(["Hel", "lo"], lambda event: None)
    assert stream_handle(engine, "answer-2") == "Hello"
    engine.thread.join()
    tokens = [(event["text"], thread) for _, event, thread in sent]
    assert "".join(text for text, _ in tokens) == "Hello"
    assert all(thread != "engine" for _, thread in tokens)


def test_a_relay_whose_send_cannot_start_leaves_the_text_to_the_stream(monkeypatch, sent):
    def publish(key, event, **_):
        if threading.current_thread().name == "engine":
            raise RuntimeError("no event loop")
        sent.append((key, event, "stream"))

    monkeypatch.setattr(inference, "publish", publish)
    relay = FirstTokenRelay("answer-3")
    engine = FakeEngine(["Hi", "!"], relay)
    assert stream_handle(engine, "answer-3", relay=relay) == "Hi!"
    engine.thread.join()
    assert relay.sent is None
    assert "".join(event["text"] for _, event, _ in sent) == "Hi!"


def test_trace_entries_are_held_until_released_then_sent_together_and_later_ones_at_once(sent):
    traces = HeldTraces("answer-4", hold_s=30)
    traces.add({"node": "remember"})
    traces.add({"node": "recall"})
    assert sent == []
    traces.release()
    traces.add({"node": "answer"})
    traces.release()  # a second release sends nothing again
    assert [event["entries"] for _, event, _ in sent] == [
        [{"node": "remember"}, {"node": "recall"}],
        [{"node": "answer"}],
    ]
    assert all(event["type"] == "gen.trace" and key == "answer-4" for key, event, _ in sent)


def test_held_trace_entries_go_out_on_their_own_when_the_answer_is_slow_to_start(sent):
    traces = HeldTraces("answer-5", hold_s=0.05)
    traces.add({"node": "classify"})
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [event["entries"] for _, event, _ in sent] == [[{"node": "classify"}]]
    traces.add({"node": "rag"})
    assert [event["entries"] for _, event, _ in sent][-1] == [{"node": "rag"}]


def test_a_run_context_releases_its_traces_when_the_answer_starts_streaming(sent):
    from apps.conversations.tools import RunContext

    traces = HeldTraces("answer-6", hold_s=30)
    run = RunContext(actor=None, defaults={}, traces=traces)
    traces.add({"node": "remember"})
    assert sent == []
    run.mark_streamed()
    assert run.streamed and [event["entries"] for _, event, _ in sent] == [[{"node": "remember"}]]
