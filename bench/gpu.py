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
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def engine_figures(shape: str, streams: list[int], decode_tokens: int, rounds: int, lora_kernel: str) -> dict:
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
        from transformers import LlamaForCausalLM
    except ImportError as exc:
        return {"skipped": f"no Hugging Face reference here ({exc.name} is not installed)"}
    from workers.llm.weights import save_hf_directory

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as directory:
        save_hf_directory(directory, shapes.random_model(shape, seed=0))
        model = LlamaForCausalLM.from_pretrained(directory, torch_dtype=dtype).to(device).eval()
    out = {"device": device, "dtype": str(dtype), "transformers": __import__("transformers").__version__, "decode": {}}
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

        generate(decode_tokens)  # warm up (allocations, kernels)
        full = statistics.median(generate(decode_tokens) for _ in range(2))
        first = statistics.median(generate(1) for _ in range(2))
        out["decode"][n] = n * (decode_tokens - 1) / max(full - first, 1e-9)
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
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    names = args.shapes.split(",")
    streams = [int(s) for s in args.streams.split(",")]

    import jax

    print(f"JAX {jax.__version__} on {jax.default_backend()}: {jax.devices()}", flush=True)
    results = {"parity": [], "engine": {}, "reference": {}, "trainer": None}
    for shape in dict.fromkeys(["tiny", names[0]]):
        print(f"1/4 parity on {shape} ...", flush=True)
        check = parity(shape)
        results["parity"].append(check)
        verdict = check.get("skipped") or ("match" if check["match"] else f"differ at {check['first_divergence']}")
        print(f"    {shape}: accelerator vs CPU greedy tokens, float32: {verdict}", flush=True)
    for shape in names:
        for kernel in args.lora_kernels.split(","):
            print(f"2/4 engine on {shape}, LoRA terms by {kernel} ...", flush=True)
            results["engine"][f"{shape} {kernel}"] = engine_figures(
                shape, streams, args.decode_tokens, args.rounds, kernel
            )
        print(f"3/4 reference on {shape} ...", flush=True)
        results["reference"][shape] = reference_figures(shape, streams, args.decode_tokens)
    print(f"4/4 trainer on {names[0]} ...", flush=True)
    results["trainer"] = trainer_figures(names[0], args.train_steps)

    print()
    kernels = args.lora_kernels.split(",")
    for shape in names:
        ref = results["reference"][shape]
        first = results["engine"][f"{shape} {kernels[0]}"]
        print(f"{shape} on {first['device']} ({first['dtype']}, load {first['load_s']:.1f} s)")
        for steps, rate in first["single_stream"].items():
            print(f"  single-stream decode, {steps} steps per call: {rate:9.1f} tok/s")
        for kernel in kernels:
            ours = results["engine"][f"{shape} {kernel}"]
            print(f"  LoRA terms by {kernel}:")
            header = ("streams", "base tok/s", "LoRA tok/s", "LoRA/base", "reference", "base/ref")
            widths = (8, 12, 12, 10, 12, 9)
            print("    " + " ".join(f"{label:>{width}}" for label, width in zip(header, widths, strict=True)))
            for n in streams:
                reference = (ref.get("decode") or {}).get(n)
                ratio = f"{ours['base'][n] / reference:9.2f}" if reference else f"{'n/a':>9}"
                ref_text = f"{reference:12.1f}" if reference else f"{'n/a':>12}"
                print(
                    f"    {n:>8} {ours['base'][n]:12.1f} {ours['lora'][n]:12.1f} "
                    f"{ours['lora'][n] / ours['base'][n]:10.2f} {ref_text} {ratio}"
                )
            print(f"    compiles after replacing all {ADAPTERS} adapters: {ours['compiles_after_swapping_adapters']}")
        if ref.get("skipped"):
            print(f"  reference: {ref['skipped']}")
        else:
            print(f"  reference: transformers {ref['transformers']} on {ref['device']} ({ref['dtype']}), static cache")
    trainer = results["trainer"]
    print(
        f"trainer on {names[0]} ({trainer['backend']}): {trainer['train_tps']:.0f} tokens/s "
        f"over {trainer['steps']} steps"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
