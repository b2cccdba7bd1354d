"""The trainer on the tiny random model: forward equivalence, losses, checkpoints, the engine."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from workers.llm import SamplingParams, load_peft_adapter, random_adapter, save_peft_adapter
from workers.llm.lora import slot_arrays
from workers.llm.model import full_logits as engine_full_logits
from workers.train import (
    CheckpointMismatchError,
    TrainingExample,
    TrainingPolicy,
    target_logprobs,
    train,
)
from workers.train.data import batch_schedule, length_buckets
from workers.train.forward import adapter_from_lora_params, full_logits, init_lora_params, lora_params_from_adapter

from .conftest import TINY_CONFIG

TOY = [
    {"prompt": f"Colour of item {i}?", "target": colour}
    for i, colour in enumerate(["red", "green", "blue", "red", "green", "blue"])
]
PAIRS = [{"prompt": f"Greet guest {i}", "target": "Welcome!", "rejected": "Go away."} for i in range(4)]


def policy(**overrides):
    values = dict(steps=6, batch_size=4, learning_rate=1e-2, warmup_steps=1, max_tokens=64, checkpoint_every=2)
    return TrainingPolicy(**{**values, **overrides})


def token_batch(seed=0, shape=(2, 20)):
    return jnp.asarray(np.random.default_rng(seed).integers(3, TINY_CONFIG.vocab_size, shape), jnp.int32)


def test_training_forward_matches_engine_logits(tiny_training_model):
    params, tokens = tiny_training_model.params, token_batch()
    np.testing.assert_allclose(
        full_logits(TINY_CONFIG, params, None, 1.0, tokens),
        engine_full_logits(TINY_CONFIG, params, tokens),
        atol=1e-5,
        rtol=0,
    )

    adapter = random_adapter(
        TINY_CONFIG, rank=4, alpha=8, seed=3, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj")
    )
    slots = {
        target: {"A": jnp.asarray(arrays["A"])[:, None], "B": jnp.asarray(arrays["B"])[:, None]}
        for target, arrays in slot_arrays(adapter, TINY_CONFIG, max_rank=4).items()
    }
    rows = (jnp.zeros((2, 1), jnp.int32), jnp.ones((2, 1), jnp.float32))
    expected = engine_full_logits(TINY_CONFIG, params, tokens, lora=slots, rows_lora=rows)
    got = full_logits(TINY_CONFIG, params, lora_params_from_adapter(adapter), adapter.scaling, tokens)
    assert np.abs(expected - engine_full_logits(TINY_CONFIG, params, tokens)).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_fresh_adapter_starts_exactly_equal_to_base(tiny_training_model):
    fresh = init_lora_params(TINY_CONFIG, rank=8, targets=TrainingPolicy().target_modules, seed=1)
    assert all(np.abs(p["A"]).max() > 0 and not p["B"].any() for p in fresh.values())
    tokens = token_batch(1)
    params = tiny_training_model.params
    # B = 0 adds exactly nothing, but XLA may fuse the two programs differently (it does on
    # AVX2-only CPUs), so the logits agree to float32 rounding, not bit for bit.
    np.testing.assert_allclose(
        full_logits(TINY_CONFIG, params, fresh, 2.0, tokens),
        full_logits(TINY_CONFIG, params, None, 1.0, tokens),
        atol=1e-5,
        rtol=0,
    )
    adapter = adapter_from_lora_params(fresh, rank=8, alpha=16)
    assert target_logprobs(tiny_training_model, TOY, adapter) == pytest.approx(
        target_logprobs(tiny_training_model, TOY), abs=1e-5
    )


def test_examples_are_rendered_and_truncated_like_the_engine(tiny_training_model, tiny_engine):
    encoder = tiny_training_model.encoder
    example = TrainingExample(prompt="What is up?", target="All good.")
    encoded = encoder.encode(example, max_tokens=256)
    engine_prompt = tiny_engine.tokenizer.encode(tiny_engine.render_chat([{"role": "user", "content": "What is up?"}]))
    assert list(encoded.prompt_ids) == engine_prompt
    end_of_turn = tiny_engine.tokenizer.hf.token_to_id("<|im_end|>")
    assert encoded.target_ids[-1] == end_of_turn
    assert tiny_engine.tokenizer.decode(encoded.target_ids) == "All good."

    short = encoder.encode(example, max_tokens=15)
    assert len(short.prompt_ids) + len(short.target_ids) == 15
    assert short.target_ids == encoded.target_ids
    assert short.prompt_ids == encoded.prompt_ids[-(15 - len(encoded.target_ids)) :]
    tiny = encoder.encode(example, max_tokens=4)
    assert short.prompt_ids[-1:] == tiny.prompt_ids and tiny.target_ids == encoded.target_ids[:3]


def test_sft_loss_is_the_weighted_mean_over_answer_tokens(tiny_training_model):
    examples = [
        TrainingExample("Pick a fruit", "apple", weight=1.0),
        TrainingExample("Pick a number", "forty-two", weight=3.0),
    ]
    result = train(tiny_training_model, examples, policy(steps=1))  # each example twice in the batch

    total, weight = 0.0, 0.0
    for example in examples:
        encoded = tiny_training_model.encoder.encode(example, 64)
        ids = list(encoded.prompt_ids + encoded.target_ids)
        logits = engine_full_logits(TINY_CONFIG, tiny_training_model.params, jnp.asarray([ids]))[0]
        log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
        start = len(encoded.prompt_ids)
        nll = -sum(log_probs[start - 1 + j, token] for j, token in enumerate(encoded.target_ids))
        total += example.weight * nll
        weight += example.weight * len(encoded.target_ids)
    assert result.loss_curve[0] == pytest.approx(total / weight, rel=1e-5)
    assert result.history[0]["dpo_loss"] == 0.0


def test_sft_loss_decreases_on_a_toy_dataset(tiny_training_model):
    result = train(tiny_training_model, TOY, policy(steps=25, learning_rate=2e-2))
    assert result.completed and result.steps_done == 25
    assert np.mean(result.loss_curve[-3:]) < 0.5 * result.loss_curve[0]
    assert result.tokens_per_second > 0
    before = np.mean(target_logprobs(tiny_training_model, TOY))
    after = np.mean(target_logprobs(tiny_training_model, TOY, result.adapter))
    assert after > before + 1.0


def test_dpo_loss_starts_at_log_two_and_decreases(tiny_training_model, tmp_path):
    result = train(tiny_training_model, PAIRS, policy(steps=12, learning_rate=2e-2))
    assert result.loss_curve[0] == pytest.approx(math.log(2), abs=1e-4)
    assert result.loss_curve[-1] < 0.5 * math.log(2)
    assert result.history[-1]["dpo_accuracy"] == 1.0 and result.history[0]["sft_loss"] == 0.0

    parent = save_peft_adapter(tmp_path / "parent", random_adapter(TINY_CONFIG, rank=4, seed=2))
    continued = train(tiny_training_model, PAIRS, policy(steps=2), parent=parent)
    assert continued.loss_curve[0] == pytest.approx(math.log(2), abs=1e-4)


def test_training_continues_from_the_parent_adapter(tiny_training_model, tmp_path):
    parent = random_adapter(TINY_CONFIG, rank=4, alpha=8, seed=4, targets=("q_proj", "down_proj"))
    directory = save_peft_adapter(tmp_path / "parent", parent)
    example = TOY[:1]
    result = train(tiny_training_model, example, policy(steps=1, rank=16), parent=directory)
    assert result.loss_curve[0] == pytest.approx(-target_logprobs(tiny_training_model, example, parent)[0], rel=1e-5)
    assert (result.adapter.rank, result.adapter.alpha) == (4, 8)
    assert result.adapter.target_modules == ["q_proj", "down_proj"]


def test_mixed_sft_and_dpo_batches(tiny_training_model):
    result = train(tiny_training_model, TOY + PAIRS, policy(steps=8))
    assert any(entry["sft_loss"] > 0 and entry["dpo_loss"] > 0 for entry in result.history)
    assert all(math.isfinite(entry["loss"]) for entry in result.history)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny_training_model, tmp_path):
    data, run_policy = TOY + PAIRS[:2], policy(steps=7)
    uninterrupted = train(tiny_training_model, data, run_policy, checkpoint_dir=tmp_path / "a")

    def crash_at_step_five(entry):
        if entry["step"] == 5:
            raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        train(tiny_training_model, data, run_policy, checkpoint_dir=tmp_path / "b", on_step=crash_at_step_five)
    resumed = train(tiny_training_model, data, run_policy, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from_step == 4 and resumed.steps_this_call == 3 and resumed.completed
    assert resumed.loss_curve == uninterrupted.loss_curve
    for target, (a, b) in uninterrupted.adapter.weights.items():
        np.testing.assert_array_equal(resumed.adapter.weights[target][0], a)
        np.testing.assert_array_equal(resumed.adapter.weights[target][1], b)

    again = train(tiny_training_model, data, run_policy, checkpoint_dir=tmp_path / "b")
    assert again.steps_this_call == 0 and again.completed and again.loss_curve == uninterrupted.loss_curve
    np.testing.assert_array_equal(again.adapter.weights["q_proj"][1], uninterrupted.adapter.weights["q_proj"][1])


def test_time_budget_stops_after_the_current_step_and_the_run_resumes(tiny_training_model, tmp_path):
    stopped = train(tiny_training_model, TOY, policy(steps=4, time_budget_s=0), checkpoint_dir=tmp_path)
    assert (stopped.steps_done, stopped.stop_reason, stopped.completed) == (1, "time_budget", False)
    finished = train(tiny_training_model, TOY, policy(steps=4), checkpoint_dir=tmp_path)
    assert finished.resumed_from_step == 1 and finished.completed
    assert finished.loss_curve == train(tiny_training_model, TOY, policy(steps=4)).loss_curve


def test_should_stop_ends_the_run(tiny_training_model):
    result = train(tiny_training_model, TOY, policy(steps=5), should_stop=lambda: True)
    assert (result.steps_done, result.stop_reason) == (1, "stopped")


def test_checkpoint_of_another_run_is_rejected(tiny_training_model, tmp_path):
    train(tiny_training_model, TOY, policy(steps=2), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError):
        train(tiny_training_model, TOY[:3], policy(steps=2), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError):
        train(tiny_training_model, TOY, policy(steps=2, learning_rate=1e-3), checkpoint_dir=tmp_path)


def test_saved_adapter_is_peft_and_changes_the_engine_output(tiny_training_model, tiny_engine, tmp_path):
    prompt, answer = "ping", "pong pong"
    data = [{"prompt": prompt, "target": answer}]
    result = train(tiny_training_model, data, policy(steps=30, learning_rate=3e-2), adapter_dir=tmp_path / "v0001")

    tensors = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (TINY_CONFIG.hidden_size, 8)
    loaded = load_peft_adapter(result.adapter_dir, TINY_CONFIG)
    assert (loaded.rank, loaded.alpha) == (8, 16)
    for target, (a, b) in result.adapter.weights.items():
        np.testing.assert_array_equal(loaded.weights[target][0], a)
        np.testing.assert_array_equal(loaded.weights[target][1], b)

    tiny_engine.load_adapter("trained", result.adapter_dir)
    chat = tiny_engine.render_chat([{"role": "user", "content": prompt}])
    params = SamplingParams(greedy=True, max_tokens=16)
    base = tiny_engine.generate(chat, params)
    adapted = tiny_engine.generate(chat, params, adapters=[("trained", 1.0)])
    assert adapted.text == answer and adapted.finish_reason == "stop"
    assert base.text != answer


def test_policy_from_dict():
    assert TrainingPolicy.from_dict({"rank": 4, "target_modules": ["q_proj"]}).target_modules == ("q_proj",)
    assert TrainingPolicy.from_dict(TrainingPolicy(steps=3).to_dict()) == TrainingPolicy(steps=3)
    with pytest.raises(ValueError, match="unknown"):
        TrainingPolicy.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match="target_modules"):
        TrainingPolicy(target_modules=("lm_head",))


def test_length_buckets_and_data_order():
    assert length_buckets(512) == [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    assert length_buckets(100) == [16, 24, 32, 48, 64, 96, 100]

    class Example:
        def __init__(self, pair):
            self.is_pair = pair

    examples = [Example(i % 3 == 0) for i in range(7)]  # three pairs, four single rows
    schedule = batch_schedule(examples, batch_rows=4, steps=20, seed=5)
    assert schedule == batch_schedule(examples, batch_rows=4, steps=20, seed=5)
    assert schedule != batch_schedule(examples, batch_rows=4, steps=20, seed=6)
    assert all(sum(2 if examples[i].is_pair else 1 for i in batch) <= 4 for batch in schedule)
    visited = [i for batch in schedule for i in batch]
    assert sorted(visited[:7]) == list(range(7))


def test_recomputed_layers_give_the_same_gradients(tiny_training_model, monkeypatch):
    from workers.train import forward

    lora = init_lora_params(TINY_CONFIG, rank=4, targets=("q_proj", "up_proj"), seed=0)
    lora["q_proj"]["B"] = np.full_like(lora["q_proj"]["B"], 0.01)
    tokens = token_batch(2, (2, 12))
    positions = jnp.tile(jnp.arange(11), (2, 1))

    def loss(lora):
        return -forward.label_logprobs(
            TINY_CONFIG, tiny_training_model.params, lora, 2.0, tokens[:, :11], positions, tokens[:, 1:]
        ).sum()

    kept = jax.grad(loss)(lora)
    monkeypatch.setattr(forward, "REMAT_TOKENS", 0)
    recomputed = jax.grad(loss)(lora)
    for expected, got in zip(jax.tree.leaves(kept), jax.tree.leaves(recomputed), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(kept["up_proj"]["B"]).max() > 0
