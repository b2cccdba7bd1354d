"""Answer quality of the seeded chat defaults, against greedy decoding with no system prompt.

    .venv/bin/python bench/quality.py [--base-url http://127.0.0.1:8000] [--workflow-id ID]
                                      [--max-tokens 64] [--model PATH] [--timeout 300]

Asks the fixed questions in bench/quality_questions.json (short factual ones a 135M model has a
fair chance at, each with its accepted answers) twice, in one run:

1. Through the platform: a running Liminal server at --base-url. A fresh user signs up
   (POST /v1/auth/signup) and asks each question in a new conversation (POST /v1/chat), so the
   answer comes from the seeded workflow (or the one --workflow-id names) with everything the
   platform puts around the model: its system prompt, its sampling settings and its answer
   length (the workflow's own settings; --max-tokens does not reach the server).
2. The reference, after the HTTP part so the two never compete for the CPU: the engine loaded
   in this process (--model, default the embedded SmolLM2-135M-Instruct; pass the server's
   MODEL_PATH if it uses another) answers each question greedily, with no system message (the
   chat template then inserts the model's own), --max-tokens tokens.

An answer is correct when one of the accepted strings occurs in it as whole words, case and
runs of whitespace aside (`score`). It prints one row per question and the two shares; figures
are printed, never asserted, and the exit status is 0 whatever the shares are.
"""

import argparse
import json
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = Path(__file__).resolve().with_name("quality_questions.json")


# Neither a letter, digit, underscore or hyphen on either side, nor a decimal point or comma
# that joins a digit to the match.
WHOLE = r"(?<![\w-])(?<!\d[.,]){}(?![\w-])(?![.,]\d)"


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def score(answer: str, accept) -> bool:
    """Whether one of the accepted strings occurs in the answer as whole words.

    Case-insensitive, after collapsing whitespace. Whole words: "rome" does not match "Romeo",
    "four" not "forty-four", and "0" matches neither "10", "-18.0" nor "0.5".
    """
    text = normalise(answer)
    return any(re.search(WHOLE.format(re.escape(normalise(wanted))), text) for wanted in accept)


def load_questions(path=QUESTIONS) -> list[dict]:
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    for item in items:
        if not item.get("question") or not item.get("accept"):
            raise ValueError(f"{path}: every entry needs a question and a non-empty accept list: {item!r}")
    return items


class PlatformError(Exception):
    pass


class Platform:
    """The few calls of the /v1 API this benchmark makes, over urllib."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.access_token = ""
        self.refresh_token = ""

    def post(self, path: str, body: dict, *, auth: bool = True, retries: int = 3) -> dict:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        if auth:
            request.add_header("Authorization", f"Bearer {self.access_token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = error_message(exc.read())
            if exc.code == 429 and retries:
                time.sleep(min(60, int(exc.headers.get("Retry-After") or 1)))
                return self.post(path, body, auth=auth, retries=retries - 1)
            if exc.code == 401 and auth and self.refresh_token and retries:
                self.refresh()  # access tokens live 15 minutes by default; a slow run outlives one
                return self.post(path, body, auth=auth, retries=retries - 1)
            raise PlatformError(f"POST {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise PlatformError(
                f"cannot reach the Liminal server at {self.base_url} ({exc.reason}); start it "
                "(with an inference worker) or pass --base-url"
            ) from None
        except TimeoutError:
            raise PlatformError(f"POST {path}: no answer within {self.timeout:.0f} s") from None
        try:
            envelope = json.loads(payload)
        except ValueError:
            raise PlatformError(f"POST {path}: the answer is not JSON: {payload[:200]!r}") from None
        if not isinstance(envelope, dict) or envelope.get("status") != "ok":
            raise PlatformError(f"POST {path}: unexpected answer: {payload[:300]!r}")
        return envelope.get("data") or {}

    def signup(self):
        tag = secrets.token_hex(4)
        data = self.post(
            "/v1/auth/signup",
            {"email": f"quality-{tag}@example.com", "password": secrets.token_urlsafe(18), "handle": f"quality-{tag}"},
            auth=False,
        )
        self.access_token, self.refresh_token = data["access_token"], data.get("refresh_token", "")

    def refresh(self):
        data = self.post("/v1/auth/refresh", {"refresh_token": self.refresh_token}, auth=False, retries=0)
        self.access_token, self.refresh_token = data["access_token"], data.get("refresh_token", "")

    def ask(self, question: str, workflow_id: str | None) -> str:
        body = {"message": {"content": question}}
        if workflow_id:
            body["workflow_id"] = workflow_id
        data = self.post("/v1/chat", body)
        if not isinstance(data.get("content"), str):
            raise PlatformError(f"POST /v1/chat: no data.content in the answer: {json.dumps(data)[:300]}")
        return data["content"]


def error_message(payload: bytes) -> str:
    """The envelope's error code and message, else the start of the body."""
    try:
        error = json.loads(payload).get("error") or {}
        message = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        message = ""
    return message or payload[:300].decode(errors="replace")


def platform_answers(questions, base_url: str, workflow_id: str | None, timeout: float) -> list[str]:
    platform = Platform(base_url, timeout)
    platform.signup()
    answers = []
    for i, item in enumerate(questions, 1):
        started = time.perf_counter()
        answers.append(platform.ask(item["question"], workflow_id))
        print(f"  platform {i}/{len(questions)} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    return answers


def reference_answers(questions, max_tokens: int, model_path: str | None) -> list[str]:
    """Greedy, no system message; all questions at once (a request's tokens do not depend on its batch)."""
    sys.path.insert(0, str(ROOT))
    from workers.llm import SamplingParams, load_engine

    engine = load_engine(model_path or None, max_batch_slots=8, max_seq_len=1024)
    try:
        params = SamplingParams(greedy=True, max_tokens=max_tokens)
        handles = [
            engine.submit(engine.render_chat([{"role": "user", "content": item["question"]}]), params=params)
            for item in questions
        ]
        return [handle.result().text for handle in handles]
    finally:
        engine.shutdown()


def one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def share(oks) -> str:
    return f"{sum(oks)}/{len(oks)} ({100 * sum(oks) / len(oks):.0f}%)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--workflow-id", default=None, help="ask through this workflow instead of the default one")
    parser.add_argument("--max-tokens", type=int, default=64, help="the reference's answer length (not the platform's)")
    parser.add_argument("--model", default=None, help="the reference's model (default: the embedded SmolLM2 GGUF)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per HTTP request")
    parser.add_argument("--questions", default=str(QUESTIONS))
    args = parser.parse_args(argv)

    questions = load_questions(args.questions)
    print(f"{len(questions)} questions from {args.questions}", file=sys.stderr)
    try:
        platform = platform_answers(questions, args.base_url, args.workflow_id, args.timeout)
    except PlatformError as exc:
        print(f"quality.py: {exc}", file=sys.stderr)
        return 1
    print("  reference: loading the engine in this process", file=sys.stderr, flush=True)
    reference = reference_answers(questions, args.max_tokens, args.model)

    platform_ok = [score(answer, item["accept"]) for answer, item in zip(platform, questions, strict=True)]
    reference_ok = [score(answer, item["accept"]) for answer, item in zip(reference, questions, strict=True)]
    label = f"workflow {args.workflow_id}" if args.workflow_id else "seeded workflow"
    print(f"\n{'question':44} | {label + ' answer':50} | ok | reference answer{'':34} | ok")
    for item, p_text, p_ok, r_text, r_ok in zip(questions, platform, platform_ok, reference, reference_ok, strict=True):
        print(
            f"{one_line(item['question'], 44):44} | {one_line(p_text, 50):50} | {'y ' if p_ok else '- '} "
            f"| {one_line(r_text, 50):50} | {'y' if r_ok else '-'}"
        )
    print(f"\n{label}: {share(platform_ok)}  greedy, no system prompt: {share(reference_ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
