"""Liminal's LoRA trainer: JAX/Optax over the same weights and math the engine decodes with.

A plain Python library (never imports Django). Typical use from a training worker::

    from workers.train import TrainingModel, TrainingPolicy, train, target_logprobs

    model = TrainingModel.load()              # SmolLM2-135M-Instruct, as load_engine() loads it
    result = train(model, [
        {"prompt": "Who maintains Frobnicator?", "target": "Ada Lumen maintains it."},
        {"prompt": "Say hi", "target": "Hi!", "rejected": "Go away.", "weight": 2.0},  # DPO
    ], TrainingPolicy(steps=30, batch_size=8, learning_rate=2e-3),
        parent=previous_version_dir,          # or None: a fresh adapter equal to the base
        checkpoint_dir=job_dir / "checkpoints", adapter_dir=job_dir / "v0002")
    engine.load_adapter("user-42", result.adapter_dir)   # PEFT files, also readable by HF PEFT
    held_out = target_logprobs(model, held_out_examples, result.adapter)

Model
    TrainingModel(loaded: LoadedModel) / TrainingModel.load(model_path=None, *, cache_dir=None):
        the frozen base (float32 device arrays), tokenizer and chat template. Build it once
        per process; `train` and `target_logprobs` also accept a LoadedModel (copied each call).

Examples
    TrainingExample(prompt, target, rejected=None, weight=1.0), or a dict with those keys.
    prompt: a user message, or chat messages ending with the user's turn. The example is
    rendered with the model's chat template exactly as `Engine.render_chat` renders a chat
    with its generation prompt, encoded as the engine encodes it, followed by the answer's
    tokens and the template's end-of-turn token. Only answer tokens (end-of-turn included)
    are scored. At most `policy.max_tokens` tokens per sequence: the prompt's start is
    dropped first, then the answer's end.

train(model, examples, policy=None, *, parent=None, checkpoint_dir=None, adapter_dir=None,
      on_step=None, should_stop=None) -> TrainingResult
    Loss per step = SFT part + DPO part, both in the same batch:
    SFT (examples without `rejected`): mean over answer tokens of -log p, each token weighted
    by its example's weight. DPO (examples with `rejected`; chosen = target): mean over pairs,
    weighted, of -log σ(β·((c - c_ref) - (r - r_ref))), with summed answer log-probabilities
    and references computed once, before training, under the model training starts from (the
    parent, or the base). Both start equal to the policy, so a DPO loss starts at log 2.
    Data order: seeded permutations per epoch, packed into batches of `batch_size` rows (a
    pair takes two rows); a pure function of data and seed, which makes resumption exact.
    Padding: rows are right-padded to length buckets (16, 24, 32, 48, 64, 96, ... up to
    max_tokens), and the output head runs only on a run-wide bucket of answer positions, so a
    run compiles one step program per length bucket it meets (shared across runs and calls).
    Optimizer: AdamW (optax) with global-norm clipping, linear warm-up and cosine decay.
    Checkpoints: see `checkpoint_dir` in `train`'s docstring and workers/train/checkpoint.py.
    Raises CheckpointMismatchError when checkpoint_dir holds another run.

TrainingResult
    adapter (LoraAdapter), adapter_dir (Path | None), history (per step: loss, sft_loss,
    dpo_loss, dpo_accuracy, grad_norm, learning_rate, tokens), loss_curve, steps_done,
    steps_total, stop_reason ("completed" | "time_budget" | "stopped"), completed,
    resumed_from_step, steps_this_call, tokens_this_call, elapsed_s, tokens_per_second
    (this call, compilation included), dataset_hash, checkpoint_dir.

TrainingPolicy(rank=8, alpha=16.0, target_modules=all seven, steps=100, batch_size=8,
               learning_rate=1e-3, warmup_steps=10, max_tokens=512, dpo_beta=0.1, seed=0,
               time_budget_s=None, checkpoint_every=50, weight_decay=0.0, max_grad_norm=1.0)
    TrainingPolicy.from_dict(mapping) (unknown keys raise), .to_dict().

target_logprobs(model, examples, adapter=None, *, batch_size=8, max_tokens=512) -> list[float]
    Mean log-probability per answer token of each example under the base (adapter None) or
    base + adapter (LoraAdapter or PEFT directory): the gate's held-out statistic.

Gate (workers/train/gate.py; numpy only)
    paired_bootstrap(candidate, current, *, resamples=10000, confidence=0.95, seed=0)
        -> {"mean_delta", "low", "high", "n"}: percentile interval of the mean paired difference.
    evaluate_gate(*, held_out_candidate, held_out_current, fact_checks, retention_candidate,
                  retention_current, min_held_out=8, retention_ratio=0.95, ...) -> GateReport
        checks held_out, improvement (bootstrap low >= 0), facts, retention (per-token
        probability ratio exp(mean lp_candidate - mean lp_current) >= 0.95); `passed` = all.
    GateReport.passed / .checks / .failed / .to_dict() (plain JSON) / .summary() (sentences).
    retention_prompts() / retention_prompts_version(): the fixed 50 prompts (retention-v1).
"""

from .checkpoint import CheckpointMismatchError
from .data import TrainingExample
from .gate import GateReport, evaluate_gate, paired_bootstrap, retention_prompts, retention_prompts_version
from .policy import TrainingPolicy
from .trainer import TrainingModel, TrainingResult, target_logprobs, train

__all__ = [
    "CheckpointMismatchError",
    "TrainingExample",
    "TrainingModel",
    "TrainingPolicy",
    "TrainingResult",
    "target_logprobs",
    "train",
    "GateReport",
    "evaluate_gate",
    "paired_bootstrap",
    "retention_prompts",
    "retention_prompts_version",
]
