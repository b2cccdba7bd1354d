"""A cluster's label and one-sentence description, written by the model from a few samples.

The answer is JSON by construction: the prompt ends inside `{"label": "`, the model writes the
label until it closes the string, then `", "description": "` is appended and it writes the
sentence. Each string is cut to its limits (6 words; one sentence), so what comes back always
fits LABEL_SCHEMA, whatever the model writes."""

from __future__ import annotations

import re

LABEL_SCHEMA = {
    "type": "object",
    "required": ["label", "description"],
    "additionalProperties": False,
    "properties": {
        "label": {"type": "string", "minLength": 1, "maxLength": 120},
        "description": {"type": "string", "maxLength": 400},
    },
}

DEFAULT_PROMPT = (
    "Here are questions users asked:\n{samples}\n\n"
    "Name their common topic in at most 6 words, then describe it in one sentence. "
    'Answer as JSON: {{"label": "...", "description": "..."}}'
)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\\", " ")).strip().strip("\"'`.,;: ")


def fit_label(text: str, max_words: int = 6) -> str:
    words = _clean(text).split(" ")
    return " ".join(words[:max_words])[:120].strip()


def fit_sentence(text: str) -> str:
    text = _clean(text)
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence[:400].strip()


def label_cluster(engine, samples: list[str], *, prompt: str = DEFAULT_PROMPT, max_words: int = 6) -> dict:
    """{"label", "description"} for the samples, greedy, through `engine` (the chat engine:
    render_chat, generate)."""
    from workers.llm import SamplingParams

    listed = "\n".join(f"- {_clean(s)[:300]}" for s in samples if s.strip())
    rendered = engine.render_chat([{"role": "user", "content": prompt.format(samples=listed)}])
    head = rendered + '{"label": "'
    label_params = SamplingParams(greedy=True, max_tokens=24, stop=['"', "\n"], repetition_penalty=1.05)
    label = fit_label(engine.generate(head, params=label_params).text, max_words)
    if not label:
        label = fit_label(samples[0] if samples else "Unlabelled topic", max_words)
    tail = head + label + '", "description": "'
    sentence_params = SamplingParams(greedy=True, max_tokens=60, stop=['"', "\n"], repetition_penalty=1.05)
    description = fit_sentence(engine.generate(tail, params=sentence_params).text)
    return {"label": label, "description": description}
