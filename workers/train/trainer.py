"""`train`: LoRA training runs with checkpoints, resumption and a time budget; `target_logprobs`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from workers.llm.lora import LoraAdapter, load_peft_adapter, save_peft_adapter
from workers.llm.weights import LoadedModel, load_model

from .checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .data import (
    ChatEncoder,
    EncodedExample,
    TrainingExample,
    batch_schedule,
    build_batch,
    label_width,
)
from .forward import adapter_from_lora_params, init_lora_params, lora_params_from_adapter
from .objective import (
    OptimizerSettings,
    learning_rate_schedule,
    make_optimizer,
    scored_logprobs,
    train_step,
)
from .policy import TrainingPolicy


class TrainingModel:
    """The frozen base a trainer differentiates through: the engine's parameters as float32
    device arrays, plus the tokenizer and chat template the engine renders prompts with.

    Build it once per worker process and reuse it across runs (the weights are copied to the
    device once, and compiled step programs are shared between runs on the same shapes)."""

    def __init__(self, loaded: LoadedModel):
        self.config = loaded.config
        self.model_id = loaded.model_id
        self.tokenizer = loaded.tokenizer
        self.encoder = ChatEncoder(loaded.tokenizer, loaded.chat_template)
        self.params = jax.tree.map(lambda array: jnp.asarray(array, jnp.float32), loaded.params)

    @classmethod
    def load(cls, model_path: str | os.PathLike | None = None, *, cache_dir=None) -> TrainingModel:
        """Load the weights the engine would (None: the default SmolLM2 GGUF, dequantized)."""
        return cls(load_model(model_path, cache_dir=cache_dir))


def as_training_model(model: TrainingModel | LoadedModel) -> TrainingModel:
    return model if isinstance(model, TrainingModel) else TrainingModel(model)


@dataclass
class TrainingResult:
    """adapter: the trained version (also written as PEFT to `adapter_dir` when one was given);
    history: one entry per step of the whole run (restored steps included) with loss, sft_loss,
    dpo_loss, dpo_accuracy, grad_norm, learning_rate, tokens; stop_reason: "completed",
    "time_budget" or "stopped" (should_stop); the timing figures cover this call only."""

    adapter: LoraAdapter
    adapter_dir: Path | None
    history: list[dict]
    steps_done: int
    steps_total: int
    stop_reason: str
    resumed_from_step: int | None
    steps_this_call: int
    tokens_this_call: int
    elapsed_s: float
    dataset_hash: str
    checkpoint_dir: Path | None = None

    @property
    def loss_curve(self) -> list[float]:
        return [entry["loss"] for entry in self.history]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_this_call / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def completed(self) -> bool:
        return self.stop_reason == "completed"


def train(
    model: TrainingModel | LoadedModel,
    examples: Iterable[TrainingExample | dict],
    policy: TrainingPolicy | dict | None = None,
    *,
    parent: LoraAdapter | str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    adapter_dir: str | os.PathLike | None = None,
    on_step: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train a LoRA adapter on `examples` (SFT for plain ones, DPO for those with `rejected`).

    parent: the adapter version to continue from (LoraAdapter or PEFT directory); its rank,
        alpha and target modules are kept. None starts a fresh adapter equal to the base.
    checkpoint_dir: where progress is saved every `policy.checkpoint_every` steps and when the
        run stops; calling again with the same directory, data, policy and parent resumes from
        the last checkpoint and ends with the same adapter an uninterrupted run would (a
        finished run just returns its result again). A directory holding another run raises
        CheckpointMismatchError.
    adapter_dir: where the resulting adapter is written as PEFT files (also when the run
        stopped early: `stop_reason` says so).
    on_step: called after every step with that step's history entry (progress, heartbeats).
    should_stop: polled after every step; True ends the run cleanly ("stopped").
    """
    started = time.monotonic()
    model = as_training_model(model)
    policy = _as_policy(policy)
    examples = [TrainingExample.coerce(example) for example in examples]
    if not examples:
        raise ValueError("no training examples")
    encoded = [model.encoder.encode(example, policy.max_tokens) for example in examples]

    parent_adapter = _as_adapter(parent, model)
    if parent_adapter is not None:
        parent_adapter.validate(model.config)
        rank, alpha, use_rslora = parent_adapter.rank, parent_adapter.alpha, parent_adapter.use_rslora
        initial = lora_params_from_adapter(parent_adapter)
    else:
        rank, alpha, use_rslora = policy.rank, policy.alpha, False
        initial = init_lora_params(model.config, rank=rank, targets=policy.target_modules, seed=policy.seed)
    scaling = LoraAdapter(rank, alpha, {}, use_rslora=use_rslora).scaling
    dataset_hash = _dataset_hash(model, encoded, policy, parent_adapter)

    settings = OptimizerSettings(weight_decay=policy.weight_decay, max_grad_norm=policy.max_grad_norm)
    opt_state = make_optimizer(settings, 0.0).init(initial)
    lora = initial
    history: list[dict] = []
    step = 0
    resumed_from = None
    if checkpoint_dir is not None:
        checkpoint = load_checkpoint(checkpoint_dir, lora_template=initial, opt_template=opt_state)
        if checkpoint is not None:
            if checkpoint.progress.get("dataset_hash") != dataset_hash:
                raise CheckpointMismatchError(
                    f"{checkpoint_dir} holds a run of other data, policy, parent adapter or model"
                )
            lora, opt_state, step = checkpoint.lora, checkpoint.opt_state, checkpoint.step
            history = list(checkpoint.progress["history"])
            resumed_from = step

    reference = _dpo_reference(model, encoded, policy, parent_adapter, initial, scaling) if step < policy.steps else {}
    schedule = batch_schedule(encoded, policy.batch_size, policy.steps, policy.seed)
    width = label_width(encoded, policy.max_tokens)
    learning_rate = learning_rate_schedule(policy.learning_rate, policy.warmup_steps, policy.steps)
    lora = jax.tree.map(jnp.asarray, lora)
    opt_state = jax.tree.map(jnp.asarray, opt_state)

    def progress() -> dict:
        return {
            "dataset_hash": dataset_hash,
            "seed": policy.seed,
            "history": history,
            "policy": policy.to_dict(),
            "rank": rank,
            "alpha": alpha,
            "use_rslora": use_rslora,
        }

    loop_started = time.monotonic()
    tokens_this_call = 0
    steps_this_call = 0
    stop_reason = "completed"
    while step < policy.steps:
        batch, tokens = build_batch(
            encoded,
            schedule[step],
            batch_rows=policy.batch_size,
            label_width=width,
            max_tokens=policy.max_tokens,
            reference=reference,
        )
        rate = float(learning_rate(step + 1))
        lora, opt_state, metrics = train_step(
            model.params,
            lora,
            opt_state,
            batch,
            jnp.float32(rate),
            config=model.config,
            scaling=scaling,
            dpo_beta=policy.dpo_beta,
            settings=settings,
        )
        step += 1
        steps_this_call += 1
        tokens_this_call += tokens
        entry = {"step": step, **{k: float(v) for k, v in metrics.items()}, "learning_rate": rate, "tokens": tokens}
        history.append(entry)
        if on_step is not None:
            on_step(entry)
        if step == policy.steps:
            break
        if policy.time_budget_s is not None and time.monotonic() - started >= policy.time_budget_s:
            stop_reason = "time_budget"
        elif should_stop is not None and should_stop():
            stop_reason = "stopped"
        if stop_reason != "completed":
            break
        if checkpoint_dir is not None and policy.checkpoint_every and step % policy.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir, step=step, lora=lora, opt_state=opt_state, progress=progress())
    elapsed = time.monotonic() - loop_started
    if checkpoint_dir is not None and step != resumed_from:
        save_checkpoint(checkpoint_dir, step=step, lora=lora, opt_state=opt_state, progress=progress())

    adapter = adapter_from_lora_params(
        jax.device_get(lora),
        rank=rank,
        alpha=alpha,
        use_rslora=use_rslora,
        metadata={"dataset_hash": dataset_hash, "steps": step, "stop_reason": stop_reason},
    )
    written = None
    if adapter_dir is not None:
        written = save_peft_adapter(adapter_dir, adapter, base_model_name_or_path=model.model_id)
    return TrainingResult(
        adapter=adapter,
        adapter_dir=written,
        history=history,
        steps_done=step,
        steps_total=policy.steps,
        stop_reason=stop_reason,
        resumed_from_step=resumed_from,
        steps_this_call=steps_this_call,
        tokens_this_call=tokens_this_call,
        elapsed_s=elapsed,
        dataset_hash=dataset_hash,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
    )


def target_logprobs(
    model: TrainingModel | LoadedModel,
    examples: Iterable[TrainingExample | dict],
    adapter: LoraAdapter | str | os.PathLike | None = None,
    *,
    batch_size: int = 8,
    max_tokens: int = 512,
) -> list[float]:
    """Mean log-probability per target token (the answer and its end-of-turn token) of each
    example under the base model (adapter None) or the base with `adapter` at weight 1.

    Examples are scored in batches of similar length (the order of the result is that of
    `examples`); `rejected` answers are ignored. Prompts are truncated as in training."""
    model = as_training_model(model)
    examples = [TrainingExample.coerce(example) for example in examples]
    encoded = [model.encoder.encode(TrainingExample(e.prompt, e.target, None, e.weight), max_tokens) for e in examples]
    adapter = _as_adapter(adapter, model)
    if adapter is None:
        lora, scaling = None, 1.0
    else:
        adapter.validate(model.config)
        lora, scaling = lora_params_from_adapter(adapter), adapter.scaling
    sums = _answer_logprob_sums(
        model,
        [(e.prompt_ids, e.target_ids) for e in encoded],
        lora,
        scaling,
        batch_size=batch_size,
        max_tokens=max_tokens,
    )
    return [total / len(e.target_ids) for total, e in zip(sums, encoded, strict=True)]


def _answer_logprob_sums(
    model: TrainingModel,
    rows: list[tuple[tuple[int, ...], tuple[int, ...]]],
    lora,
    scaling: float,
    *,
    batch_size: int,
    max_tokens: int,
) -> list[float]:
    """Summed log-probability of each (prompt, answer) row's answer, batched by length."""
    if not rows:
        return []
    as_examples = [EncodedExample(prompt, answer, None, 1.0) for prompt, answer in rows]
    width = label_width(as_examples, max_tokens)
    device_lora = None if lora is None else jax.tree.map(jnp.asarray, lora)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    sums = [0.0] * len(rows)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        batch, _ = build_batch(as_examples, chunk, batch_rows=batch_size, label_width=width, max_tokens=max_tokens)
        logp = scored_logprobs(
            model.params,
            device_lora,
            batch["tokens"],
            batch["label_positions"],
            batch["labels"],
            config=model.config,
            scaling=scaling,
        )
        row_sums = (np.asarray(logp, np.float64) * batch["label_mask"]).sum(axis=-1)
        for r, index in enumerate(chunk):
            sums[index] = float(row_sums[r])
    return sums


def _dpo_reference(
    model: TrainingModel,
    encoded: list[EncodedExample],
    policy: TrainingPolicy,
    parent: LoraAdapter | None,
    initial_lora: dict,
    scaling: float,
) -> dict[int, tuple[float, float]]:
    """Summed answer log-probabilities of every pair under the model training starts from (the
    parent adapter, or the base for a fresh one, which a fresh adapter equals), computed once:
    a resumed run recomputes the same values."""
    pairs = [i for i, example in enumerate(encoded) if example.is_pair]
    if not pairs:
        return {}
    rows = []
    for i in pairs:
        rows += [(encoded[i].prompt_ids, encoded[i].target_ids), (encoded[i].prompt_ids, encoded[i].rejected_ids)]
    lora = initial_lora if parent is not None else None
    sums = _answer_logprob_sums(model, rows, lora, scaling, batch_size=policy.batch_size, max_tokens=policy.max_tokens)
    return {index: (sums[2 * k], sums[2 * k + 1]) for k, index in enumerate(pairs)}


def _as_policy(policy: TrainingPolicy | dict | None) -> TrainingPolicy:
    if policy is None:
        return TrainingPolicy()
    if isinstance(policy, TrainingPolicy):
        return policy
    return TrainingPolicy.from_dict(policy)


def _as_adapter(source: LoraAdapter | str | os.PathLike | None, model: TrainingModel) -> LoraAdapter | None:
    if source is None or isinstance(source, LoraAdapter):
        return source
    return load_peft_adapter(source, model.config)


def _dataset_hash(
    model: TrainingModel, encoded: list[EncodedExample], policy: TrainingPolicy, parent: LoraAdapter | None
) -> str:
    """Identity of a run: its tokens, weights, policy, parent adapter and base model shape."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {"model": model.model_id, "config": model.config.to_json(), "policy": policy.fingerprint()}, sort_keys=True
        ).encode()
    )
    for example in encoded:
        digest.update(
            json.dumps([example.prompt_ids, example.target_ids, example.rejected_ids, example.weight]).encode()
        )
    if parent is not None:
        digest.update(json.dumps([parent.rank, parent.alpha, parent.use_rslora]).encode())
        for name, array in sorted(parent.state_dict().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return digest.hexdigest()
