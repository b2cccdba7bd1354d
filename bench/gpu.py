"""The GPU issue's figures in one run, on random weights of named shapes (nothing to download).

    python3 bench/gpu.py [--shapes smollm2-135m,llama-3.2-1b] [--streams 1,16,64]
                         [--decode-tokens 128] [--rounds 3] [--json out.json]
    .venv/bin/python bench/gpu.py --shapes tiny --streams 1,4 --decode-tokens 16   # a CPU dry run

1. Parity: the engine on this machine's accelerator against the engine on its CPU (a child
   process, JAX_PLATFORMS=cpu), float32 on both, the same random weights: the greedy tokens of
   four prompts, 32 each (`workers/llm/tests/test_gpu.py` asserts the same).
2. The engine per shape, in the accelerator's dtype (bfloat16 on a GPU): single-stream decode
   tokens/s at 1, 4, 8, 16 and 32 decode steps per compiled call (what more steps per launch
   buy); aggregate decode at each stream count with the base model and with every stream on
   its own rank-16 adapter (16 distinct, stream i on adapter i mod 16), alternating, best of
   `--rounds`; the LoRA / base ratio; and whether replacing all 16 adapters compiled anything.
   Once per way of computing the LoRA terms (`--lora-kernels`): each row's factors gathered,
   and per adapter slot with ragged_dot.
3. Reference, in the same run: Hugging Face transformers' LlamaForCausalLM on the same weights
   and dtype, greedy `generate` with a static cache at the same batch sizes (decode tokens/s
   from the time difference between `--decode-tokens` and 1 new tokens). Skipped, saying so,
   where torch or transformers is missing (the project's venv has neither).
4. The LoRA trainer (`workers/train`, the seeded policy's rank 8 on all seven projections,
   batches of 8 rows) on the first shape: tokens/s of training steps, the first (compiling)
   step left out.

Figures are printed (and written as JSON with --json), never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# JAX would otherwise take 75% of the GPU's memory at its first use, and the torch reference runs
# in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from bench.engine import aggregate_decode, prompt_tokens  # noqa: E402
from workers.llm import shapes  # noqa: E402

ADAPTERS = 16
TRAIN_EXAMPLES = [
    {"prompt": f"Who maintains project {n}?", "target": f"Project {n} is maintained by person {n * 7 % 13}."}
    for n in range(64)
]


def parity(shape: str, tokens: int = 32) -> dict:
    import jax

    if jax.default_backend() == "cpu":
        return {"shape": shape, "skipped": "JAX sees only the CPU here"}
    here = shapes.greedy_tokens(shape, seed=1, tokens=tokens)
    cpu = shapes.greedy_tokens_on_cpu(shape, seed=1, tokens=tokens)
    return {
        "shape": shape,
        "tokens": tokens,
        "match": here == cpu,
        "first_divergence": shapes.first_divergence(here, cpu),
        "accelerator": here,
        "cpu": cpu,
    }


def engine_figures(
    shape: str, streams: list[int], decode_tokens: int, rounds: int, lora_kernel: str, dtype: str | None = None
) -> dict:
    import jax

    from workers.llm import SamplingParams, random_adapter
    from workers.llm.engine import Engine

    started = time.perf_counter()
    engine = Engine(
        shapes.random_model(shape, seed=0),
        max_batch_slots=max(streams),
        max_seq_len=512,
        lora_slots=ADAPTERS,
        max_lora_rank=16,
        speculative_tokens=0,
        lora_kernel=lora_kernel,
        dtype=dtype,  # None: the engine's choice, bfloat16 on a GPU
    )

    def load_adapters(seed: int) -> None:
        for i in range(ADAPTERS):
            engine.evict_adapter(f"bench-{i}")
            engine.load_adapter(f"bench-{i}", random_adapter(engine.config, rank=16, seed=seed + i, scale=0.01))

    load_adapters(0)
    out = {
        "shape": shape,
        "lora_kernel": lora_kernel,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "dtype": str(engine.dtype),
        "load_s": time.perf_counter() - started,
        "single_stream": {},
        "base": {},
        "lora": {},
    }

    def greedy(n):
        return SamplingParams(greedy=True, max_tokens=n, ignore_eos=True)

    prompt = prompt_tokens(engine.tokenizer, 32)
    for steps in (1, 4, 8, 16, 32) if lora_kernel == "gather" else ():  # the base model's path: the same for both
        engine.decode_steps = steps
        engine.submit(prompt, params=greedy(decode_tokens)).result()  # compile
        results = [engine.submit(prompt, params=greedy(decode_tokens)).result() for _ in range(2)]
        out["single_stream"][steps] = max(
            (r.completion_tokens - 1) / (r.total_time - r.time_to_first_token) for r in results
        )
    engine.decode_steps = 4
    for n in streams:
        stream_prompts = [prompt_tokens(engine.tokenizer, 32 + i)[i:] for i in range(n)]
        adapters = {"base": [[] for _ in range(n)], "lora": [[(f"bench-{i % ADAPTERS}", 1.0)] for i in range(n)]}
        for kind in adapters:
            aggregate_decode(engine, stream_prompts, adapters[kind], 8, lambda: greedy(8))  # compile
            out[kind][n] = 0.0
        for _ in range(rounds):
            for kind in adapters:
                rate = aggregate_decode(
                    engine, stream_prompts, adapters[kind], decode_tokens, lambda: greedy(decode_tokens)
                )
                out[kind][n] = max(out[kind][n], rate)
    compiled = engine.compile_count
    load_adapters(1000)  # every adapter replaced by another
    n = max(streams)
    stream_prompts = [prompt_tokens(engine.tokenizer, 32 + i)[i:] for i in range(n)]
    aggregate_decode(engine, stream_prompts, [[(f"bench-{i % ADAPTERS}", 1.0)] for i in range(n)], 8, lambda: greedy(8))
    out["compiles_after_swapping_adapters"] = engine.compile_count - compiled
    engine.shutdown()
    return out


def reference_figures(shape: str, streams: list[int], decode_tokens: int) -> dict:
    try:
        import torch
        import transformers
        from transformers import LlamaForCausalLM
    except ImportError as exc:
        return {"skipped": f"no Hugging Face reference here ({exc.name} is not installed)"}
    from workers.llm.weights import save_hf_directory

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as directory:
        save_hf_directory(directory, shapes.random_model(shape, seed=0))
        model = LlamaForCausalLM.from_pretrained(directory, dtype=dtype).to(device).eval()
    out = {
        "device": device,
        "dtype": str(dtype),
        "transformers": transformers.__version__,
        # transformers compiles the forward pass (torch.compile) for a static cache on a GPU, not on a CPU
        "compiled": device != "cpu",
        "warm_up_s": 0.0,
        "decode": {},
    }
    generator = torch.Generator().manual_seed(0)
    for n in streams:
        ids = torch.randint(300, shapes.SHAPES[shape].vocab_size, (n, 32), generator=generator).to(device)

        def generate(new_tokens, ids=ids):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            with torch.inference_mode():
                model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    cache_implementation="static",
                    pad_token_id=0,
                )
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started

        out["warm_up_s"] += generate(decode_tokens)  # allocations, kernels, and the compile for this batch size
        full = statistics.median(generate(decode_tokens) for _ in range(2))
        first = statistics.median(generate(1) for _ in range(2))
        out["decode"][n] = n * (decode_tokens - 1) / max(full - first, 1e-9)
    model = None  # freed before the engine measured next
    if device == "cuda":
        torch.cuda.empty_cache()  # the engine measured next shares the GPU's memory with torch's cache
    return out


def trainer_figures(shape: str, steps: int) -> dict:
    import jax

    from workers.train import TrainingPolicy, train
    from workers.train.trainer import as_training_model

    model = as_training_model(shapes.random_model(shape, seed=0))
    policy = TrainingPolicy(
        rank=8, alpha=16.0, steps=steps + 1, batch_size=8, learning_rate=2e-4, warmup_steps=1, checkpoint_every=0
    )
    stamps = []
    train(model, TRAIN_EXAMPLES, policy, on_step=lambda entry: stamps.append((time.perf_counter(), entry)))
    times = [later[0] - earlier[0] for earlier, later in zip(stamps, stamps[1:], strict=False)]
    tokens = [entry["tokens"] for _, entry in stamps[1:]]
    return {"backend": jax.default_backend(), "steps": len(times), "train_tps": sum(tokens) / sum(times)}


def print_engine(shape: str, streams: list[int], figures: dict, reference: dict | None) -> None:
    if "error" in figures:
        print(f"  {shape}, LoRA terms by {figures['lora_kernel']}: failed: {figures['error']}", flush=True)
        return
    print(f"  {shape} on {figures['device']} ({figures['dtype']}, load {figures['load_s']:.1f} s)", flush=True)
    for steps, rate in figures["single_stream"].items():
        print(f"    single-stream decode, {steps} steps per call: {rate:9.1f} tok/s")
    print(f"    LoRA terms by {figures['lora_kernel']}:")
    header = ("streams", "base tok/s", "LoRA tok/s", "LoRA/base", "reference", "base/ref")
    widths = (8, 12, 12, 10, 12, 9)
    print("      " + " ".join(f"{label:>{width}}" for label, width in zip(header, widths, strict=True)))
    for n in streams:
        ref = ((reference or {}).get("decode") or {}).get(n)
        ratio = f"{figures['base'][n] / ref:9.2f}" if ref else f"{'n/a':>9}"
        ref_text = f"{ref:12.1f}" if ref else f"{'n/a':>12}"
        print(
            f"      {n:>8} {figures['base'][n]:12.1f} {figures['lora'][n]:12.1f} "
            f"{figures['lora'][n] / figures['base'][n]:10.2f} {ref_text} {ratio}"
        )
    compiles = figures["compiles_after_swapping_adapters"]
    print(f"    compiles after replacing all {ADAPTERS} adapters: {compiles}", flush=True)


def print_reference(shape: str, reference: dict) -> None:
    if "decode" not in reference:
        print(f"  reference on {shape}: {reference.get('skipped') or 'failed: ' + reference.get('error', '?')}")
        return
    rates = ", ".join(f"{n} streams {rate:.1f} tok/s" for n, rate in reference["decode"].items())
    print(
        f"  reference on {shape}: transformers {reference['transformers']} on {reference['device']} "
        f"({reference['dtype']}, static cache, compiled: {reference['compiled']}, "
        f"first call {reference['warm_up_s']:.1f} s): {rates}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="smollm2-135m,llama-3.2-1b")
    parser.add_argument("--streams", default="1,16,64")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument(
        "--lora-kernels",
        default="gather,grouped",
        help="how XLA computes the LoRA terms: per row (gather) and per adapter slot (grouped, ragged_dot)",
    )
    parser.add_argument("--skip-parity", action="store_true", help="where test_gpu.py has just checked it")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("bfloat16", "float32"),
        help="the engine's compute dtype (default: the engine's choice, bfloat16 on a GPU); bfloat16 on a CPU "
        "rehearses the GPU's XLA path",
    )
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="start no part after this many seconds (a lent GPU's time is short): what ran is kept",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="written after every part, so a cut run keeps its figures"
    )
    args = parser.parse_args()
    names = args.shapes.split(",")
    streams = [int(s) for s in args.streams.split(",")]
    kernels = args.lora_kernels.split(",")
    started = time.monotonic()

    import jax

    print(f"JAX {jax.__version__} on {jax.default_backend()}: {jax.devices()}", flush=True)
    results = {"jax": jax.__version__, "parity": [], "engine": {}, "reference": {}, "trainer": None, "not_run": []}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))

    def attempt(label: str, measure):
        """Runs one part unless the deadline has passed; a part that fails is recorded, not fatal."""
        if args.deadline_s is not None and time.monotonic() - started > args.deadline_s:
            print(f"{label}: not run (past the {args.deadline_s:.0f} s deadline)", flush=True)
            results["not_run"].append(label)
            save()
            return None
        print(f"{label} ...", flush=True)
        part_started = time.monotonic()
        try:
            figures = measure()
        except Exception as exc:  # noqa: BLE001 - one part's failure must not lose the others' figures
            traceback.print_exc()
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        figures["seconds"] = time.monotonic() - part_started
        return figures

    # Ordered by what the GPU issue needs most, so a deadline cuts the least important parts.
    if not args.skip_parity:
        for shape in dict.fromkeys(["tiny", names[0]]):
            check = attempt(f"parity on {shape}", lambda shape=shape: parity(shape))
            if check is not None:
                results["parity"].append(check)
                verdict = check.get("skipped") or check.get("error")
                verdict = verdict or ("match" if check["match"] else f"differ at {check['first_divergence']}")
                print(f"  {shape}: accelerator vs CPU greedy tokens, float32: {verdict}", flush=True)
                save()
    for index, shape in enumerate(names):
        reference = attempt(
            f"reference on {shape}", lambda shape=shape: reference_figures(shape, streams, args.decode_tokens)
        )
        if reference is not None:
            results["reference"][shape] = reference
            print_reference(shape, reference)
            save()
        for kernel in kernels:
            figures = attempt(
                f"engine on {shape}, LoRA terms by {kernel}",
                lambda shape=shape, kernel=kernel: engine_figures(
                    shape, streams, args.decode_tokens, args.rounds, kernel, args.dtype
                ),
            )
            if figures is not None:
                figures.setdefault("lora_kernel", kernel)
                results["engine"][f"{shape} {kernel}"] = figures
                print_engine(shape, streams, figures, reference)
                save()
        if index == 0:
            trainer = attempt(f"trainer on {shape}", lambda shape=shape: trainer_figures(shape, args.train_steps))
            if trainer is not None:
                results["trainer"] = trainer
                if "error" in trainer:
                    print(f"  trainer on {shape}: failed: {trainer['error']}", flush=True)
                else:
                    print(
                        f"  trainer on {shape} ({trainer['backend']}): {trainer['train_tps']:.0f} tokens/s "
                        f"over {trainer['steps']} steps",
                        flush=True,
                    )
                save()
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)
    failed = [label for label, part in results["engine"].items() if "error" in part]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
