"""The serving engine: continuous batching over fixed sequence slots, multi-LoRA, streaming.

One background thread owns the device state (KV cache, adapter slots) and runs the loop:
admit waiting requests into free sequence slots (prefill, first token sampled in the same
call), then advance every running sequence by `decode_steps` tokens in one jitted call, stream
the tokens to their requests, and free the slots of finished or cancelled ones.
"""

from __future__ import annotations

import bisect
import itertools
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels
from . import model as llama
from .config import ModelConfig
from .lora import AdapterSlotTable, LoraAdapter, load_peft_adapter, quantize_slot_arrays, slot_arrays
from .sampling import SamplingParams, sample, seed_key
from .tokenizer import ChatTemplate, IncrementalDecoder, Tokenizer
from .weights import LoadedModel, load_model

MAX_ADAPTERS_PER_REQUEST = llama.MAX_ADAPTERS_PER_ROW
# A request stops speculating once SPECULATION_PROBATION draft tokens have been checked and fewer
# than this share was accepted: with the 4-bit kernel a verify pass over 5 tokens costs about
# two plain decode steps, so mostly rejected drafts halve the rate (bench/engine.py shows both).
SPECULATION_PROBATION = 8
SPECULATION_MIN_ACCEPTANCE = 0.5


class ContextOverflowError(ValueError):
    """The prompt does not fit the engine's context window (and truncation was not asked for)."""

    def __init__(self, prompt_tokens: int, context_length: int):
        super().__init__(
            f"prompt has {prompt_tokens} tokens; the context window holds {context_length} (prompt + generated tokens)"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class EngineClosedError(RuntimeError):
    """The engine was shut down."""


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. `text` is the new, complete text since the previous event (possibly
    empty while a multi-byte character or a possible stop string is pending); concatenating the
    `text` of all events gives the final result text."""

    index: int
    token_id: int
    text: str
    logprob: float


@dataclass
class GenerationResult:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int]
    time_to_first_token: float | None
    total_time: float
    mean_logprob: float | None
    adapters: dict[str, object]  # adapter name -> version used
    model_id: str
    error: str | None = None


_DONE = object()


class GenerationHandle:
    """Iterate for `TokenEvent`s as they are produced; `result()` blocks for the outcome."""

    def __init__(self, request: _Request):
        self._request = request
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: GenerationResult | None = None

    def __iter__(self):
        while True:
            event = self._events.get()
            if event is _DONE:
                return
            yield event

    def result(self, timeout: float | None = None) -> GenerationResult:
        if not self._done.wait(timeout):
            raise TimeoutError("generation still running")
        return self._result

    def cancel(self) -> None:
        self._request.cancel_requested = True
        self._request.engine._wake()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def adapters(self) -> dict[str, object]:
        return dict(self._request.adapter_versions)

    def _finish(self, result: GenerationResult) -> None:
        self._result = result
        self._done.set()
        self._events.put(_DONE)


@dataclass(eq=False)
class _Request:
    engine: Engine
    prompt_ids: list[int]
    params: SamplingParams
    adapter_slots: list[tuple[int, float]]
    adapter_versions: dict[str, object]
    on_token: Callable[[TokenEvent], None] | None
    should_cancel: Callable[[], bool] | None
    seed: int
    max_new_tokens: int
    submitted_at: float = field(default_factory=time.perf_counter)
    handle: GenerationHandle | None = None
    cancel_requested: bool = False
    slot: int | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    decoder: IncrementalDecoder | None = None
    text: str = ""
    emitted: int = 0
    first_token_at: float | None = None
    finished: bool = False
    drafted: int = 0  # prompt-lookup draft tokens proposed for this request / accepted
    draft_accepted: int = 0


def _buckets(limit: int, start: int) -> list[int]:
    """Roughly geometric sizes (x1.5, x1.33 alternating) from `start` up to `limit` inclusive."""
    sizes, size = [], start
    while size < limit:
        sizes.append(size)
        size = size * 3 // 2 if (size & (size - 1)) == 0 else (size // 3) * 4
    sizes.append(limit)
    return sorted(set(sizes))


def _prefill_buckets(limit: int, start: int) -> list[int]:
    """Prompt-chunk sizes: `_buckets` plus quarter steps between powers of two from 64 up
    (80, 112, 160, 224, 320, 448, ...), so a prompt pads by at most ~25% instead of ~50% (prefill
    time is linear in the padded length; each size compiles once, when first used)."""
    sizes = set(_buckets(limit, start))
    power = 64
    while power < limit:
        sizes.update(s for s in (power * 5 // 4, power * 7 // 4) if start <= s < limit)
        power *= 2
    return sorted(sizes)


class Engine:
    """See the package docstring for the public API."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_slots: int = 8,
        max_seq_len: int = 2048,
        lora_slots: int = 8,
        max_lora_rank: int = 16,
        dtype=None,
        decode_steps: int = 4,
        prefill_chunk: int = 512,
        speculative_tokens: int = 4,
        prefill_matmul_dtype=None,
        decode_weights: str = "auto",
        lora_dtype=None,
        kv_dtype=None,
        lora_kernel: str = "gather",
    ):
        config = loaded.config
        self.config: ModelConfig = config
        self.tokenizer: Tokenizer = loaded.tokenizer
        self.model_id = loaded.model_id
        self.chat_template = ChatTemplate(
            loaded.chat_template, bos_token=self.tokenizer.bos_token, eos_token=self.tokenizer.eos_token
        )
        self.max_batch_slots = max_batch_slots
        self.max_seq_len = min(max_seq_len, config.context_length)
        self.context_length = self.max_seq_len
        self.max_lora_rank = max_lora_rank
        self.decode_steps = decode_steps
        self.speculative_tokens = speculative_tokens
        self.speculation = {"rounds": 0, "proposed": 0, "accepted": 0}
        self.prefill_chunk = min(prefill_chunk, self.max_seq_len)
        if dtype is None:
            dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
        self.dtype = jnp.dtype(dtype)
        self.prefill_matmul_dtype = None if prefill_matmul_dtype is None else jnp.dtype(prefill_matmul_dtype)
        self._prefill_buckets = _prefill_buckets(self.prefill_chunk, min(16, self.prefill_chunk))
        self._kv_buckets = _buckets(self.max_seq_len, min(128, self.max_seq_len))

        # Host copies made on the way (packed, dequantized, transposed) are freed when this
        # returns, before the cache and adapter slots are allocated: they would otherwise add
        # about 0.6 GB to the process's peak.
        self._place_weights(loaded.params, decode_weights)
        # Decode batches read each row's adapter slots and cache in place (XLA:CPU copies
        # gathered slots and cache windows first).
        self.native_lora = native_kernels_apply(self.dtype)
        self.native_attention = self.native_lora
        if lora_kernel not in ("gather", "grouped"):
            raise ValueError(f"lora_kernel must be 'gather' or 'grouped', not {lora_kernel!r}")
        # How XLA computes the LoRA terms the native kernels do not (all of them on a GPU):
        # each row's factors gathered (default), or per adapter slot (model._lora_delta_grouped).
        self.lora_kernel = lora_kernel
        # Prompts take the 4-bit panels too where they beat XLA's GEMM (see kernels.fastest_rows);
        # the opt-in narrower prefill matmuls are XLA's.
        self._prefill_q4 = self.q4 if self.prefill_matmul_dtype is None else None
        self.kv_dtype = self._choose_kv_dtype(kv_dtype)
        self.lora_dtype = self._choose_lora_dtype(lora_dtype)
        self.lora = llama.init_lora_state(config, lora_slots, max_lora_rank, self.lora_dtype)
        self._reset_sequences()
        self.adapters = AdapterSlotTable(lora_slots)

        self.compile_count = 0
        self.compiled: list[tuple] = []
        self._prefill_jit = jax.jit(self._prefill_impl, donate_argnums=(4, 5), static_argnames=("kv_len", "lora_width"))
        self._verify_jit = jax.jit(self._verify_impl, donate_argnums=(4,), static_argnames=("kv_len", "lora_width"))
        self._decode_jit = jax.jit(
            self._decode_impl, donate_argnums=(4, 5), static_argnames=("kv_len", "steps", "lora_width", "compact")
        )
        self._write_slot_jit = jax.jit(_write_slot, donate_argnums=(0,))

        self._rows: list[_Request | None] = [None] * max_batch_slots
        self._pending: deque[_Request] = deque()
        self._commands: deque = deque()
        self._cond = threading.Condition()
        self._device_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._seed_counter = itertools.count(int.from_bytes(os.urandom(4), "little"))
        # Compile the slot writer now so that loading adapters later never compiles.
        self._write_slot(0, self._slot_format(slot_arrays(LoraAdapter(1, 1.0, {}), config, max_lora_rank)))

    # ---------------------------------------------------------------------------------------
    # Public API

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def submit(
        self,
        prompt,
        *,
        params: SamplingParams | None = None,
        adapters=(),
        on_token: Callable[[TokenEvent], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        truncate: bool = False,
    ) -> GenerationHandle:
        """Queue a generation. `prompt` is text (special-token strings are honoured) or ids.

        adapters: up to three (name, weight) pairs, resolved now: the request keeps these
        versions even if they are replaced while it runs. Raises ContextOverflowError when
        the prompt leaves no room for a token, unless truncate=True (keep the prompt's end).
        """
        if self._closed:
            raise EngineClosedError("engine is shut down")
        params = params or SamplingParams()
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) >= self.context_length:
            if not truncate:
                raise ContextOverflowError(len(ids), self.context_length)
            keep = self.context_length - min(params.max_tokens, self.context_length // 2)
            ids = ids[-keep:]
        bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"token ids out of range: {bad[:5]}")
        merged: dict[str, float] = {}
        for name, weight in adapters:
            merged[name] = merged.get(name, 0.0) + float(weight)
        if len(merged) > MAX_ADAPTERS_PER_REQUEST:
            raise ValueError(f"at most {MAX_ADAPTERS_PER_REQUEST} adapters per request")
        resolved = self.adapters.acquire(list(merged.items()))
        seed = params.seed if params.seed is not None else next(self._seed_counter)
        request = _Request(
            engine=self,
            prompt_ids=ids,
            params=params,
            adapter_slots=[(slot, weight) for slot, weight, _, _ in resolved],
            adapter_versions={name: version for _, _, name, version in resolved},
            on_token=on_token,
            should_cancel=should_cancel,
            seed=seed,
            max_new_tokens=min(params.max_tokens, self.context_length - len(ids)),
        )
        request.decoder = IncrementalDecoder(self.tokenizer)
        request.handle = GenerationHandle(request)
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
        self.start()
        return request.handle

    def generate(self, prompt, params: SamplingParams | None = None, **kwargs) -> GenerationResult:
        """Blocking convenience: submit and wait."""
        return self.submit(prompt, params=params, **kwargs).result()

    def chat(self, messages: list[dict], params: SamplingParams | None = None, **kwargs) -> GenerationHandle:
        return self.submit(self.render_chat(messages), params=params, **kwargs)

    def load_adapter(self, name: str, source, *, version=None, pin: bool = False) -> object:
        """Load or replace adapter `name` (PEFT directory/file path, LoraAdapter, or a mapping of
        PEFT tensor names to arrays). Running requests keep the version they started with; no
        recompilation happens. Returns the version now served under `name`."""
        if isinstance(source, LoraAdapter):
            adapter = source
        elif isinstance(source, dict):
            adapter = LoraAdapter.from_state_dict(source, self.config)
        else:
            adapter = load_peft_adapter(source, self.config)
        adapter.validate(self.config)
        arrays = self._slot_format(slot_arrays(adapter, self.config, self.max_lora_rank))
        if version is None:
            previous = self.adapters.current_version(name)
            version = previous + 1 if isinstance(previous, int) else 1
        slot = self.adapters.reserve(name)
        try:
            self._on_engine_thread(lambda: self._write_slot(slot, arrays))
        except BaseException:
            self.adapters.abort(slot)
            raise
        self.adapters.commit(name, slot, version, pin)
        return version

    def ensure_adapter(self, name: str, source, *, version, pin: bool = False) -> object:
        """Load `source` under `name` unless that exact version is already loaded."""
        if self.adapters.current_version(name) == version:
            return version
        return self.load_adapter(name, source, version=version, pin=pin)

    def evict_adapter(self, name: str) -> bool:
        """Stop serving `name` (requests already running on it finish normally)."""
        return self.adapters.evict(name)

    def adapter_versions(self) -> dict[str, object]:
        return self.adapters.versions()

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
                self._thread.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the loop; unfinished requests end with finish_reason "cancelled"."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        for request in list(self._pending) + [r for r in self._rows if r is not None]:
            self._finish(request, "cancelled")
        self._pending.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    @property
    def active_requests(self) -> int:
        return sum(r is not None for r in self._rows)

    @property
    def free_slots(self) -> int:
        return self.max_batch_slots - self.active_requests

    def warmup(self, *, prompt_lengths=(1,), lora_widths=(0, 1)) -> None:
        """Compile the programs that serving will need first (prefill buckets for the given
        prompt lengths, every decode bucket) so the first requests do not wait for XLA."""
        with self._device_lock:
            if any(self._rows) or self._pending:
                raise RuntimeError("warmup() must run before requests are submitted")
            for width in lora_widths:
                for length in prompt_lengths:
                    self._run_prefill_chunk(
                        0, [0] * min(length, self.prefill_chunk), 0, min(length, self.prefill_chunk), _WARMUP_ROW, width
                    )
                for size in self._decode_batch_sizes():
                    for kv_len in self._kv_buckets:
                        self._run_decode(kv_len, width, slots=list(range(size)))

    # ---------------------------------------------------------------------------------------
    # Device programs

    def _choose_kv_dtype(self, requested):
        """The KV cache in float16 by default where the native attention kernel reads it (float32
        CPU engines): decode attention is bound by reading the cache (a float32 cache of 16 rows
        at 512 positions is 377 MB per step), and float16 halves that and the cache's memory.
        llama.cpp keeps its cache in float16 by default too. Keys and values are rounded to
        float16 when written; attention still computes in float32. Elsewhere the engine's
        dtype."""
        if requested is None:
            return default_kv_dtype(self.dtype, self.native_attention)
        dtype = jnp.dtype(requested)
        if dtype not in (jnp.float32, jnp.float16, jnp.bfloat16):
            raise ValueError(f"kv_dtype must be float32, float16 or bfloat16, not {requested!r}")
        if self.native_attention and dtype == jnp.bfloat16:
            raise ValueError("the native attention kernel reads a float32 or float16 cache")
        return dtype

    def _choose_lora_dtype(self, requested):
        """Adapter slots in int8 by default where the native kernels read them (float32 CPU
        engines), in bfloat16 where the engine computes in bfloat16 (GPU). A decode batch of 16
        rows on 16 rank-16 adapters reads 312 MB of float32 slots per step (156 MB in bfloat16,
        78 MB in int8) beside 80 MB of 4-bit weights, and reading them bounds its speed. The
        stored A and B·alpha/r are rounded: to 8 significant bits in bfloat16, or to 8-bit
        multiples of a step per rank in int8 (lora.quantize_slot_arrays: within ~1% of the
        float32 term, far below what the 4-bit base weights already move). A bfloat16 term is
        computed in float32; an int8 one in integers over 16-bit x and rank vectors in the
        kernels (kernels/lora_term.h), in float32 in prefill (which converts the gathered
        slots). float32 or bfloat16 on request; float32 where XLA's own einsums read the slots
        on CPU (it computes bfloat16 slowly there)."""
        if requested is not None:
            dtype = jnp.dtype(requested)
            if dtype not in (jnp.float32, jnp.bfloat16, jnp.int8):
                raise ValueError(f"lora_dtype must be float32, bfloat16 or int8, not {requested!r}")
            if dtype != jnp.float32 and self.dtype == jnp.float32 and not self.native_lora:
                raise ValueError(
                    f"{dtype} adapter slots on a float32 engine need the native "
                    "LoRA kernel (kernels.available() is False)"
                )
            if dtype == jnp.int8 and not self._pairs_fit():
                raise ValueError("lora_dtype int8 needs an even max_lora_rank and even projection input sizes")
            return dtype
        if not self.native_lora:
            return self.dtype
        return jnp.dtype(jnp.int8) if self._pairs_fit() else jnp.dtype(jnp.bfloat16)

    def _pairs_fit(self) -> bool:
        """Whether int8 slots' pairs (of inputs in A, of ranks in B) fit this model's shapes."""
        return self.max_lora_rank % 2 == 0 and all(fan_in % 2 == 0 for fan_in, _ in self.config.target_dims().values())

    def _choose_decode_weights(self, requested: str, host_params: dict) -> str:
        """ "q4": decode through the 4-bit kernel (float32 CPU engines only); "float": plain
        float32 matmuls; "auto": q4 when the weights already are 4-bit blocks (a Q4_0/Q4_1
        GGUF, so nothing is lost) and the kernel builds on this machine."""
        if requested not in ("auto", "q4", "float"):
            raise ValueError(f"decode_weights must be auto, q4 or float, not {requested!r}")
        if requested == "float" or not native_kernels_apply(self.dtype):
            return "float"
        if requested == "auto" and not kernels.is_four_bit(host_params["layers"]):
            return "float"
        return "q4"

    def _place_weights(self, params: dict, decode_weights: str) -> None:
        """The weights on the device: self.params (float), and self.q4 / self.q8_head (packed
        for the native kernels) where they apply."""
        host_params = llama.serving_params(params)
        self.decode_weights = self._choose_decode_weights(decode_weights, host_params)
        self.q4 = None
        if self.decode_weights == "q4":
            packed = kernels.pack_layers(host_params["layers"])
            if self._q4_takes_every_call(packed):
                # The float copies would never be read (~0.4 GB for SmolLM2-135M).
                layers = {k: v for k, v in host_params["layers"].items() if k not in packed}
            else:
                # Every path computes with the same weights: XLA's float matmuls (prompts, or
                # the opt-in narrower prefill) use the packed weights dequantized, so a row's
                # tokens do not depend on which path ran it.
                layers = {**host_params["layers"], **{name: kernels.dequantize_q4(p) for name, p in packed.items()}}
            host_params = {**host_params, "layers": layers}
            self.q4 = jax.tree.map(jnp.asarray, packed)
        # The output head is read once per decoded token like the layers; it takes the 8-bit
        # kernel when its weights already are 8-bit blocks (the GGUF's Q8_0 token embedding).
        self.q8_head = None
        self._verify_limit = sys.maxsize  # tokens one speculative verify may check
        head = kernels.pack_q8_losslessly(host_params["lm_head"]) if self.decode_weights == "q4" else None
        if head is not None:
            packed_head, head_weights = head
            host_params = {**host_params, "lm_head": head_weights}
            self.q8_head = jax.tree.map(jnp.asarray, kernels.with_panels(packed_head, kernels.q8_panels))
            if self.config.tie_word_embeddings and self.max_batch_slots <= kernels.MAX_ROWS:
                # The 8-bit kernel then computes every decode batch's and prompt's logits, and
                # speculative verifies are held to as many tokens (_speculative_round), so the
                # float head (the embedding transposed: 113 MB for SmolLM2-135M) would never
                # be read. (logits_from_hidden would fall back to the embedding.)
                host_params = {k: v for k, v in host_params.items() if k != "lm_head"}
                self._verify_limit = kernels.MAX_ROWS
        self.params = jax.tree.map(lambda a: jnp.asarray(a, self.dtype), host_params)

    def _q4_takes_every_call(self, packed: dict) -> bool:
        """Whether the 4-bit kernels run every matmul of the decoder's layers: any number of rows
        (the panel kernels) and no opt-in narrower prefill matmuls, which are XLA's."""
        return kernels.fastest_rows(packed) == sys.maxsize and self.prefill_matmul_dtype is None

    def host_weights(self) -> dict:
        """The weights this engine computes with, as float32 numpy arrays in the model's layout
        (packed matrices and the 8-bit head dequantized where the engine holds no float copy)."""
        params = jax.tree.map(np.asarray, self.params)
        if self.q8_head is not None and "lm_head" not in params:
            head = {k: np.asarray(v) for k, v in self.q8_head.items() if k != "panels"}
            params["lm_head"] = kernels.dequantize_q8(head)
        if self.q4 is not None:
            layers = dict(params["layers"])
            for name, packed in self.q4.items():
                layers.setdefault(name, kernels.dequantize_q4(jax.tree.map(np.asarray, packed)))
            params = {**params, "layers": layers}
        return params

    def _prefill_impl(
        self,
        params,
        q4,
        q8_head,
        lora,
        cache,
        seen,
        tokens,
        start,
        length,
        slot,
        rows_lora,
        sampling,
        *,
        kv_len,
        lora_width,
    ):
        self._count_compile(("prefill", tokens.shape[1], kv_len, lora_width))
        use_lora = lora_width > 0
        T = tokens.shape[1]
        positions = (start + jnp.arange(T))[None, :]
        hidden, cache = llama.forward_hidden(
            self.config,
            params,
            lora if use_lora else None,
            tokens,
            positions,
            cache,
            slot_ids=slot[None],
            kv_len=kv_len,
            rows_lora=rows_lora if use_lora else None,
            matmul_dtype=self.prefill_matmul_dtype,
            q4=q4,
            native_lora=self.native_lora,
            grouped_lora=self.lora_kernel == "grouped",
        )
        last = jax.lax.dynamic_index_in_dim(hidden[0], jnp.clip(length - 1 - start, 0, T - 1), keepdims=False)
        logits = llama.logits_from_hidden(params, last[None, :], q8_head=q8_head)
        row = jnp.where(start == 0, jnp.zeros_like(seen[slot]), seen[slot])
        valid = jnp.arange(T) < (length - start)
        row = row.at[jnp.where(valid, tokens[0], self.config.vocab_size)].set(True, mode="drop")
        seen = seen.at[slot].set(row)
        token, logprob = sample(logits, row[None], *sampling, jnp.zeros((1,), jnp.int32))
        return token[0], logprob[0], cache, seen

    def _decode_impl(
        self,
        params,
        q4,
        q8_head,
        lora,
        cache,
        seen,
        tokens,
        positions,
        slot_ids,
        rows_lora,
        sampling,
        generated,
        *,
        kv_len,
        steps,
        lora_width,
        compact,
    ):
        """`steps` decode steps for the rows in `slot_ids` (all slots in order unless compact)."""
        self._count_compile(("decode", tokens.shape[0], kv_len, steps, lora_width))
        use_lora = lora_width > 0
        B = tokens.shape[0]
        rows = jnp.arange(B)
        row_seen = seen[slot_ids] if compact else seen

        def step(i, carry):
            cache, row_seen, tokens, out_tokens, out_logprobs = carry
            hidden, cache = llama.forward_hidden(
                self.config,
                params,
                lora if use_lora else None,
                tokens[:, None],
                (positions + i)[:, None],
                cache,
                slot_ids=slot_ids if compact else None,
                kv_len=kv_len,
                rows_lora=rows_lora if use_lora else None,
                q4=q4,
                native_lora=self.native_lora,
                grouped_lora=self.lora_kernel == "grouped",
                native_attention=self.native_attention,
            )
            logits = llama.logits_from_hidden(params, hidden[:, 0], q8_head=q8_head)
            next_tokens, logprobs = sample(logits, row_seen, *sampling, generated + i)
            row_seen = row_seen.at[rows, next_tokens].set(True)
            out_tokens = out_tokens.at[:, i].set(next_tokens)
            out_logprobs = out_logprobs.at[:, i].set(logprobs)
            return cache, row_seen, next_tokens, out_tokens, out_logprobs

        carry = (cache, row_seen, tokens, jnp.zeros((B, steps), jnp.int32), jnp.zeros((B, steps), jnp.float32))
        cache, row_seen, _, out_tokens, out_logprobs = jax.lax.fori_loop(0, steps, step, carry)
        seen = seen.at[slot_ids].set(row_seen) if compact else row_seen
        return out_tokens, out_logprobs, cache, seen

    def _verify_impl(self, params, q4, q8_head, lora, cache, tokens, start, slot, rows_lora, *, kv_len, lora_width):
        """Greedy predictions after each of `tokens` [1, T] (the last sampled token followed by
        draft tokens), writing their KV entries: one pass checks a whole draft."""
        self._count_compile(("verify", tokens.shape[1], kv_len, lora_width))
        use_lora = lora_width > 0
        positions = (start + jnp.arange(tokens.shape[1]))[None, :]
        hidden, cache = llama.forward_hidden(
            self.config,
            params,
            lora if use_lora else None,
            tokens,
            positions,
            cache,
            slot_ids=slot[None],
            kv_len=kv_len,
            rows_lora=rows_lora if use_lora else None,
            q4=q4,
            native_lora=self.native_lora,
            grouped_lora=self.lora_kernel == "grouped",
            native_attention=self.native_attention,
        )
        logits = llama.logits_from_hidden(params, hidden[0], q8_head=q8_head)
        predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        chosen = jnp.take_along_axis(logits, predictions[:, None], axis=-1)[:, 0]
        return predictions, chosen - jax.nn.logsumexp(logits, axis=-1), cache

    def _count_compile(self, key) -> None:
        # Runs only while jax traces, i.e. once per compiled program.
        self.compile_count += 1
        self.compiled.append(key)

    def _slot_format(self, arrays: dict) -> dict:
        """`slot_arrays`' float32 tables in the slots' format (quantized off the engine thread,
        so that loading an adapter does not pause the running batch for it)."""
        if self.lora_dtype == jnp.int8:
            return quantize_slot_arrays(arrays)  # A and B int8, scale float32
        return jax.tree.map(lambda a: np.asarray(a).astype(self.lora_dtype), arrays)

    def _write_slot(self, slot: int, arrays: dict) -> None:
        """Write tables in the slots' format (`_slot_format`) into slot `slot`."""
        with self._device_lock:
            self.lora = self._write_slot_jit(self.lora, jnp.int32(slot), arrays)

    def _row_sampling(self, requests: list[_Request | None], lora_width: int | None = None):
        """Per-row sampling arrays and adapter (slot, weight) columns; only as many adapter
        columns as the busiest row needs are passed, so adapter-free batches skip LoRA."""
        n = len(requests)
        temperature = np.ones(n, np.float32)
        top_k = np.zeros(n, np.int32)
        top_p = np.ones(n, np.float32)
        penalty = np.ones(n, np.float32)
        greedy = np.ones(n, np.bool_)
        keys = np.zeros((n, 2), np.uint32)
        lora_index = np.zeros((n, MAX_ADAPTERS_PER_REQUEST), np.int32)
        lora_weight = np.zeros((n, MAX_ADAPTERS_PER_REQUEST), np.float32)
        for i, request in enumerate(requests):
            if request is None:
                continue
            p = request.params
            temperature[i] = max(p.temperature, 0.0)
            top_k[i] = p.top_k
            top_p[i] = p.top_p
            penalty[i] = p.repetition_penalty
            greedy[i] = p.is_greedy
            keys[i] = seed_key(request.seed)
            for j, (slot, weight) in enumerate(request.adapter_slots):
                lora_index[i, j] = slot
                lora_weight[i, j] = weight
        sampling = (temperature, top_k, top_p, penalty, greedy, keys)
        if lora_width is None:
            used = np.nonzero(lora_weight.any(axis=0))[0]
            lora_width = int(used[-1]) + 1 if used.size else 0
        return sampling, (lora_index[:, :lora_width], lora_weight[:, :lora_width])

    def _run_prefill_chunk(
        self, start: int, chunk: list[int], slot: int, length: int, request: _Request, lora_width: int | None = None
    ):
        bucket = self._prefill_buckets[bisect.bisect_left(self._prefill_buckets, len(chunk))]
        tokens = np.zeros((1, bucket), np.int32)
        tokens[0, : len(chunk)] = chunk
        kv_len = bucket if start == 0 else self._kv_bucket(start + bucket)
        sampling, rows_lora = self._row_sampling([request], lora_width)
        token, logprob, self.cache, self.seen = self._prefill_jit(
            self.params,
            self._prefill_q4,
            self.q8_head,
            self.lora,
            self.cache,
            self.seen,
            tokens,
            np.int32(start),
            np.int32(length),
            np.int32(slot),
            rows_lora,
            sampling,
            kv_len=kv_len,
            lora_width=rows_lora[0].shape[1],
        )
        return token, logprob

    def _kv_bucket(self, needed: int) -> int:
        index = bisect.bisect_left(self._kv_buckets, needed)
        return self._kv_buckets[min(index, len(self._kv_buckets) - 1)]

    def _decode_batch_sizes(self) -> list[int]:
        sizes = [1]
        while sizes[-1] * 2 < self.max_batch_slots:
            sizes.append(sizes[-1] * 2)
        return sorted(set(sizes + [self.max_batch_slots]))

    def _decode_rows(self) -> list[int]:
        """Cache slots to decode: the busy ones, padded with free ones up to a power of two
        (a lone request runs a batch of one, not of max_batch_slots)."""
        busy = [i for i, r in enumerate(self._rows) if r is not None]
        size = 1
        while size < len(busy):
            size *= 2
        if size >= self.max_batch_slots:
            return list(range(self.max_batch_slots))
        free = [i for i, r in enumerate(self._rows) if r is None]
        return busy + free[: size - len(busy)]

    def _run_decode(self, kv_len: int, lora_width: int | None = None, slots=None):
        slots = list(range(self.max_batch_slots)) if slots is None else slots
        rows = [self._rows[i] for i in slots]
        tokens = np.zeros(len(rows), np.int32)
        positions = np.zeros(len(rows), np.int32)
        generated = np.zeros(len(rows), np.int32)
        for i, request in enumerate(rows):
            if request is not None:
                tokens[i] = request.token_ids[-1]
                positions[i] = len(request.prompt_ids) + len(request.token_ids) - 1
                generated[i] = len(request.token_ids)
        sampling, rows_lora = self._row_sampling(rows, lora_width)
        compact = len(slots) < self.max_batch_slots
        out_tokens, out_logprobs, self.cache, self.seen = self._decode_jit(
            self.params,
            self.q4,
            self.q8_head,
            self.lora,
            self.cache,
            self.seen,
            tokens,
            positions,
            np.asarray(slots, np.int32),
            rows_lora,
            sampling,
            generated,
            kv_len=kv_len,
            steps=self.decode_steps,
            lora_width=rows_lora[0].shape[1],
            compact=compact,
        )
        return out_tokens, out_logprobs

    # ---------------------------------------------------------------------------------------
    # Loop

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _on_engine_thread(self, fn):
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            with self._device_lock:
                return fn()
        done = threading.Event()
        outcome: dict = {}

        def command():
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # handed back to the caller's thread
                outcome["error"] = exc
            finally:
                done.set()

        with self._cond:
            self._commands.append(command)
            self._cond.notify_all()
        while not done.wait(0.05):
            if not thread.is_alive():
                with self._device_lock:
                    if not done.is_set():
                        self._commands.remove(command)
                        return fn()
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._commands and not self._pending and not any(self._rows):
                    self._cond.wait()
                if self._closed:
                    return
                commands = list(self._commands)
                self._commands.clear()
            with self._device_lock:
                for command in commands:
                    command()
                try:
                    self._admit()
                    self._poll_cancellations()
                    if any(self._rows):
                        if not self._speculative_round():
                            self._decode_round()
                except Exception as exc:  # fail the running requests, keep serving new ones
                    for request in [r for r in self._rows if r is not None]:
                        self._finish(request, "error", error=repr(exc))
                    self._reset_sequences()

    def _admit(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    return
                free = [i for i, r in enumerate(self._rows) if r is None]
                if not free:
                    return
                request = self._pending.popleft()
            if self._cancel_requested(request):
                self._finish(request, "cancelled")
                continue
            slot = free[0]
            self._rows[slot] = request
            request.slot = slot
            try:
                ids = request.prompt_ids
                for start in range(0, len(ids), self.prefill_chunk):
                    chunk = ids[start : start + self.prefill_chunk]
                    token, logprob = self._run_prefill_chunk(start, chunk, slot, len(ids), request)
                self._accept(request, int(token), float(logprob))
            except Exception as exc:
                self._finish(request, "error", error=repr(exc))

    def _speculative_round(self) -> bool:
        """Prompt-lookup speculative decoding for a lone greedy request: propose the tokens that
        followed the latest earlier occurrence of the sequence's last n-gram and check them all
        in one forward pass (decoding one sequence is bound by reading the weights, so checking
        several tokens costs about as much as producing one). Returns False when not applicable."""
        k = min(self.speculative_tokens, self._verify_limit - 1)
        active = [r for r in self._rows if r is not None]
        if k <= 0 or len(active) != 1 or self._pending:
            return False
        request = active[0]
        params = request.params
        if not params.is_greedy or params.repetition_penalty != 1.0:
            return False
        if (
            request.drafted >= SPECULATION_PROBATION
            and request.draft_accepted < SPECULATION_MIN_ACCEPTANCE * request.drafted
        ):
            return False  # its drafts keep failing: checking them costs more than it saves
        ids = request.prompt_ids + request.token_ids
        start = len(ids) - 1
        if start + k + 1 > self.max_seq_len:
            return False
        draft = ngram_draft(ids, k)
        if not draft:
            return False
        tokens = np.zeros((1, k + 1), np.int32)
        tokens[0, : len(draft) + 1] = [ids[-1], *draft]
        _, rows_lora = self._row_sampling([request])
        predictions, logprobs, self.cache = self._verify_jit(
            self.params,
            self.q4,
            self.q8_head,
            self.lora,
            self.cache,
            tokens,
            np.int32(start),
            np.int32(request.slot),
            rows_lora,
            kv_len=self._kv_bucket(start + k + 1),
            lora_width=rows_lora[0].shape[1],
        )
        predictions = np.asarray(predictions)
        logprobs = np.asarray(logprobs)
        accepted = 0
        while accepted < len(draft) and draft[accepted] == predictions[accepted]:
            accepted += 1
        self.speculation["rounds"] += 1
        self.speculation["proposed"] += len(draft)
        self.speculation["accepted"] += accepted
        request.drafted += len(draft)
        request.draft_accepted += accepted
        for j in range(accepted + 1):
            if request.finished:
                break
            self._accept(request, int(predictions[j]), float(logprobs[j]))
        return True

    def _decode_round(self) -> None:
        longest = max(len(r.prompt_ids) + len(r.token_ids) for r in self._rows if r is not None)
        kv_len = self._kv_bucket(longest + self.decode_steps - 1)
        slots = self._decode_rows()
        out_tokens, out_logprobs = self._run_decode(kv_len, slots=slots)
        out_tokens = np.asarray(out_tokens)
        out_logprobs = np.asarray(out_logprobs)
        for i, slot in enumerate(slots):
            request = self._rows[slot]
            if request is None:
                continue
            for step in range(self.decode_steps):
                if request.finished:
                    break
                self._accept(request, int(out_tokens[i, step]), float(out_logprobs[i, step]))

    def _poll_cancellations(self) -> None:
        for request in self._rows:
            if request is not None and self._cancel_requested(request):
                self._finish(request, "cancelled")
        with self._cond:
            waiting = list(self._pending)
        for request in waiting:
            if self._cancel_requested(request):
                with self._cond:
                    if request in self._pending:
                        self._pending.remove(request)
                self._finish(request, "cancelled")

    def _reset_sequences(self) -> None:
        """Fresh KV cache and token masks (a failed call may have consumed the donated ones)."""
        self.cache = llama.init_cache(self.config, self.max_batch_slots, self.max_seq_len, self.kv_dtype)
        self.seen = jnp.zeros((self.max_batch_slots, self.config.vocab_size), jnp.bool_)

    def _cancel_requested(self, request: _Request) -> bool:
        if request.cancel_requested:
            return True
        if request.should_cancel is not None:
            try:
                if request.should_cancel():
                    request.cancel_requested = True
            except Exception:
                return False
        return request.cancel_requested

    def _accept(self, request: _Request, token: int, logprob: float) -> None:
        """Record one sampled token: stream its text, decide whether the request is done."""
        if request.first_token_at is None:
            request.first_token_at = time.perf_counter()
        finish = None
        is_stop_token = token in self.tokenizer.stop_token_ids and not request.params.ignore_eos
        if is_stop_token:
            finish = "stop"
        else:
            request.token_ids.append(token)
            request.logprobs.append(logprob)
            request.text += request.decoder.push(token)
            if len(request.token_ids) >= request.max_new_tokens:
                finish = "length"
        stop_at = _find_stop(request.text, request.params.stop, request.emitted)
        if stop_at is not None:
            request.text = request.text[:stop_at]
            finish = "stop"
        elif finish is not None:
            request.text += request.decoder.flush()
        if finish is None:
            safe = len(request.text) - _pending_stop_prefix(request.text, request.params.stop)
        else:
            safe = len(request.text)
        delta = request.text[request.emitted : safe]
        request.emitted = max(request.emitted, safe)
        if not is_stop_token or delta:
            event = TokenEvent(index=len(request.token_ids) - 1, token_id=token, text=delta, logprob=logprob)
            try:
                if request.on_token is not None:
                    request.on_token(event)
            except Exception as exc:
                self._finish(request, "error", error=f"on_token failed: {exc!r}")
                return
            request.handle._events.put(event)
        if finish is not None:
            self._finish(request, finish)

    def _finish(self, request: _Request, reason: str, error: str | None = None) -> None:
        if request.finished:
            return
        request.finished = True
        if request.slot is not None and self._rows[request.slot] is request:
            self._rows[request.slot] = None
        self.adapters.release([slot for slot, _ in request.adapter_slots])
        now = time.perf_counter()
        text = request.text[: request.emitted]
        logprobs = request.logprobs
        request.handle._finish(
            GenerationResult(
                text=text,
                finish_reason=reason,
                prompt_tokens=len(request.prompt_ids),
                completion_tokens=len(request.token_ids),
                token_ids=list(request.token_ids),
                time_to_first_token=(
                    request.first_token_at - request.submitted_at if request.first_token_at is not None else None
                ),
                total_time=now - request.submitted_at,
                mean_logprob=float(np.mean(logprobs)) if logprobs else None,
                adapters=dict(request.adapter_versions),
                model_id=self.model_id,
                error=error,
            )
        )


_WARMUP_ROW = _Request(
    engine=None,
    prompt_ids=[0],
    params=SamplingParams(greedy=True),
    adapter_slots=[],
    adapter_versions={},
    on_token=None,
    should_cancel=None,
    seed=0,
    max_new_tokens=1,
)


def ngram_draft(ids: list[int], length: int, max_ngram: int = 3) -> list[int]:
    """Up to `length` tokens that followed the most recent earlier occurrence of the longest
    (up to `max_ngram`) suffix of `ids`; empty when the suffix never occurred before."""
    array = np.asarray(ids)
    for n in range(min(max_ngram, len(ids) - 1), 0, -1):
        suffix = array[-n:]
        windows = np.lib.stride_tricks.sliding_window_view(array[:-1], n)
        matches = np.nonzero((windows == suffix).all(axis=1))[0]
        if matches.size:
            follow = int(matches[-1]) + n
            return [int(t) for t in array[follow : follow + length]]
    return []


def _write_slot(lora, slot, arrays):
    return {
        target: {part: table.at[:, slot].set(arrays[target][part]) for part, table in lora[target].items()}
        for target in lora
    }


def _find_stop(text: str, stops, emitted: int) -> int | None:
    """Index where the earliest stop string starts in the not-yet-emitted part of `text`."""
    best = None
    for stop in stops:
        index = text.find(stop, max(0, emitted - len(stop) + 1))
        if index != -1 and (best is None or index < best):
            best = index
    return best


def _pending_stop_prefix(text: str, stops) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def native_kernels_apply(dtype) -> bool:
    """Whether an engine computing in `dtype` reads adapter slots and the KV cache with the
    native kernels (float32 on CPU, when they build here)."""
    return jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu" and kernels.available()


def default_kv_dtype(dtype=jnp.float32, native_attention=None):
    """The KV cache dtype an engine computing in `dtype` picks when not told (see
    Engine._choose_kv_dtype)."""
    if native_attention is None:
        native_attention = native_kernels_apply(dtype)
    return jnp.dtype(jnp.float16) if native_attention else jnp.dtype(dtype)


def load_engine(
    model_path: str | None = None,
    *,
    max_batch_slots: int = 8,
    max_seq_len: int = 2048,
    lora_slots: int = 8,
    max_lora_rank: int = 16,
    dtype=None,
    decode_steps: int = 4,
    prefill_chunk: int = 512,
    speculative_tokens: int = 4,
    cache_dir=None,
    prefill_matmul_dtype=None,
    decode_weights: str = "auto",
    lora_dtype=None,
    kv_dtype=None,
    lora_kernel: str = "gather",
) -> Engine:
    """Load weights (GGUF file or Hugging Face directory; None = SmolLM2-135M-Instruct) and
    build an engine. The engine thread starts with the first request (or `engine.start()`)."""
    loaded = load_model(model_path, cache_dir=cache_dir)
    return Engine(
        loaded,
        max_batch_slots=max_batch_slots,
        max_seq_len=max_seq_len,
        lora_slots=lora_slots,
        max_lora_rank=max_lora_rank,
        dtype=dtype,
        decode_steps=decode_steps,
        prefill_chunk=prefill_chunk,
        speculative_tokens=speculative_tokens,
        prefill_matmul_dtype=prefill_matmul_dtype,
        decode_weights=decode_weights,
        lora_dtype=lora_dtype,
        kv_dtype=kv_dtype,
        lora_kernel=lora_kernel,
    )
