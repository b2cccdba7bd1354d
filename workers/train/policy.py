"""Hyper-parameters of one LoRA training run, as a plain dataclass that round-trips through a dict."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from workers.llm.model import LORA_TARGETS

# Fields that change what a run computes; the others (when to stop, how often to save) may differ
# between a run and its resumption without invalidating the checkpoint.
_RESUMABLE_FIELDS = ("time_budget_s", "checkpoint_every")


@dataclass(frozen=True)
class TrainingPolicy:
    """How to train one adapter version.

    rank, alpha, target_modules: the LoRA shape (scaling = alpha / rank); ignored when training
        continues from a parent adapter, whose shape the new version must keep to be a
        continuation of it.
    steps: optimizer updates; batch_size: rows per update (a DPO pair takes two rows).
    learning_rate: AdamW peak, reached after `warmup_steps` linear steps, then cosine decay to 0.
    max_tokens: prompt + answer tokens kept per example (the prompt's start is dropped first).
    dpo_beta: DPO temperature for examples that carry a rejected answer.
    seed: initial A matrices and the data order; the same seed gives the same adapter.
    time_budget_s: stop after the step that crosses this many seconds of this call (None: none).
    checkpoint_every: save every N steps when a checkpoint directory is given (0: only when the
        run stops); a run is always saved when it stops.
    weight_decay, max_grad_norm: AdamW decoupled decay and global-norm clipping (None: no clip).
    """

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = LORA_TARGETS
    steps: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    max_tokens: int = 512
    dpo_beta: float = 0.1
    seed: int = 0
    time_budget_s: float | None = None
    checkpoint_every: int = 50
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0

    def __post_init__(self):
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        problems = []
        if self.rank < 1:
            problems.append("rank must be at least 1")
        if not self.alpha > 0:
            problems.append("alpha must be positive")
        unknown = sorted(set(self.target_modules) - set(LORA_TARGETS))
        if unknown or not self.target_modules:
            problems.append(f"target_modules must be a non-empty subset of {list(LORA_TARGETS)}")
        if len(set(self.target_modules)) != len(self.target_modules):
            problems.append("target_modules has duplicates")
        if self.steps < 1:
            problems.append("steps must be at least 1")
        if self.batch_size < 1:
            problems.append("batch_size must be at least 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append("learning_rate must be positive")
        if self.warmup_steps < 0:
            problems.append("warmup_steps must not be negative")
        if self.max_tokens < 2:
            problems.append("max_tokens must be at least 2 (a prompt token and a target token)")
        if not self.dpo_beta > 0:
            problems.append("dpo_beta must be positive")
        if self.time_budget_s is not None and self.time_budget_s < 0:
            problems.append("time_budget_s must not be negative")
        if self.checkpoint_every < 0:
            problems.append("checkpoint_every must not be negative")
        if self.weight_decay < 0:
            problems.append("weight_decay must not be negative")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append("max_grad_norm must be positive or None")
        if problems:
            raise ValueError("invalid training policy: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict) -> TrainingPolicy:
        """Build from a plain mapping; unknown keys are an error so a typo cannot go unnoticed."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training policy fields: {unknown}")
        return cls(**values)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values

    def fingerprint(self) -> dict:
        """The fields a checkpoint must agree on to be resumed under this policy."""
        return {k: v for k, v in self.to_dict().items() if k not in _RESUMABLE_FIELDS}
