"""Command line: stream a model's answer to a prompt.

    python -m workers.llm --prompt "What is the capital of France?" --greedy
    python -m workers.llm --model path/to/model.gguf --adapter path/to/adapter:0.8 --seed 7 \\
        --temperature 0.8 --max-tokens 200 --prompt "..."

The chat template is applied unless --raw is given. Statistics go to stderr.
"""

from __future__ import annotations

import argparse
import sys

from .engine import load_engine
from .sampling import SamplingParams


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m workers.llm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompt", required=True, help="the user message ('-' reads stdin)")
    parser.add_argument(
        "--model", default=None, help="GGUF file or Hugging Face directory (default: SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--system", default=None, help="optional system message")
    parser.add_argument("--raw", action="store_true", help="send the prompt without chat template")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help="PEFT LoRA adapter directory, optionally with a weight (repeatable)",
    )
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--greedy", action="store_true", help="always pick the likeliest token")
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--quiet", action="store_true", help="no statistics on stderr")
    return parser.parse_args(argv)


def _split_adapter(spec: str) -> tuple[str, float]:
    path, sep, weight = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return spec, 1.0


def main(argv=None) -> int:
    args = parse_args(argv)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    engine = load_engine(
        args.model, max_batch_slots=1, max_seq_len=args.max_seq_len, lora_slots=max(1, len(args.adapter))
    )
    adapters = []
    for index, spec in enumerate(args.adapter):
        path, weight = _split_adapter(spec)
        name = f"cli-{index}"
        engine.load_adapter(name, path)
        adapters.append((name, weight))
    if not args.raw:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": prompt})
        prompt = engine.render_chat(messages)
    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        max_tokens=args.max_tokens,
        stop=args.stop,
        greedy=args.greedy,
    )
    handle = engine.submit(prompt, params=params, adapters=adapters, truncate=True)
    try:
        for event in handle:
            sys.stdout.write(event.text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        handle.cancel()
    result = handle.result()
    sys.stdout.write("\n")
    sys.stdout.flush()
    engine.shutdown()
    if not args.quiet:
        ttft = result.time_to_first_token or 0.0
        decode_time = max(result.total_time - ttft, 1e-9)
        print(
            f"[{result.model_id}] finish={result.finish_reason} prompt={result.prompt_tokens} "
            f"completion={result.completion_tokens} ttft={ttft:.3f}s "
            f"decode={max(result.completion_tokens - 1, 0) / decode_time:.1f} tok/s "
            f"mean_logprob={result.mean_logprob if result.mean_logprob is not None else 'n/a'}",
            file=sys.stderr,
        )
    return 0 if result.finish_reason != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
