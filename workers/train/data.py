"""Training examples: chat rendering, target masks, truncation, length buckets and the data order.

An example is rendered exactly as the engine renders a chat (the model's template, then the
tokenizer's `encode`), followed by the answer and the template's end-of-turn token: the tokens
the engine would see and produce when it answers that prompt. Only answer tokens are scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workers.llm.tokenizer import ChatTemplate, Tokenizer

MIN_BUCKET = 16


@dataclass
class TrainingExample:
    """prompt: a user message, or chat messages ending with the user's turn; target: the
    answer to teach; rejected: a worse answer to the same prompt (makes this a DPO pair);
    weight: this example's share of the loss (per target token for SFT, per pair for DPO)."""

    prompt: str | list[dict]
    target: str
    rejected: str | None = None
    weight: float = 1.0

    @classmethod
    def coerce(cls, value) -> TrainingExample:
        """Accept a TrainingExample or a mapping with the same keys."""
        if isinstance(value, cls):
            example = value
        elif isinstance(value, dict):
            unknown = sorted(set(value) - {"prompt", "target", "rejected", "weight"})
            if unknown:
                raise ValueError(f"unknown example fields: {unknown}")
            example = cls(
                prompt=value["prompt"],
                target=value["target"],
                rejected=value.get("rejected"),
                weight=float(value.get("weight", 1.0)),
            )
        else:
            raise TypeError(f"expected a TrainingExample or a dict, not {type(value).__name__}")
        if not (math.isfinite(example.weight) and example.weight >= 0):
            raise ValueError(f"example weight must be a finite number >= 0, not {example.weight!r}")
        if not isinstance(example.target, str) or not example.target:
            raise ValueError("example target must be a non-empty string")
        if example.rejected is not None and not isinstance(example.rejected, str):
            raise ValueError("example rejected must be a string or None")
        return example


@dataclass(frozen=True)
class EncodedExample:
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...] | None
    weight: float

    @property
    def is_pair(self) -> bool:
        return self.rejected_ids is not None


class ChatEncoder:
    """Turns examples into token ids the way the engine renders and encodes a chat."""

    def __init__(self, tokenizer: Tokenizer, chat_template: str):
        self.tokenizer = tokenizer
        self.template = ChatTemplate(chat_template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)

    @staticmethod
    def messages(prompt: str | list[dict]) -> list[dict]:
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        return [dict(message) for message in prompt]

    def prompt_ids(self, prompt: str | list[dict]) -> list[int]:
        """What the engine encodes for `engine.chat(messages)`: the template with its generation
        prompt."""
        return self.tokenizer.encode(self.template.render(self.messages(prompt)))

    def answer_ids(self, prompt: str | list[dict], answer: str) -> list[int]:
        """The answer's tokens followed by the end-of-turn token the template closes it with.

        The answer is encoded on its own (the generation prompt ends at a token boundary, as it
        does when the engine generates), and the template's text after it is encoded up to and
        including its first stop token."""
        messages = self.messages(prompt)
        head = self.template.render(messages)
        full = self.template.render([*messages, {"role": "assistant", "content": answer}], add_generation_prompt=False)
        for rendered_answer in (answer, answer.strip()):
            if full.startswith(head + rendered_answer):
                break
        else:
            raise ValueError(
                "the chat template does not render the answer right after the "
                "generation prompt; cannot tell prompt tokens from answer tokens"
            )
        tail = full[len(head) + len(rendered_answer) :]
        ids = self.tokenizer.encode(rendered_answer, add_bos=False)
        tail_ids = self.tokenizer.encode(tail, add_bos=False)
        stops = self.tokenizer.stop_token_ids
        end = next((i for i, token in enumerate(tail_ids) if token in stops), None)
        if end is not None:
            return ids + tail_ids[: end + 1]
        if self.tokenizer.eos_token_id is None:
            raise ValueError(
                "the chat template closes no turn with a stop token and the tokenizer has no end-of-sequence token"
            )
        return ids + [self.tokenizer.eos_token_id]

    def encode(self, example: TrainingExample, max_tokens: int) -> EncodedExample:
        """Token ids of `example`, at most `max_tokens` per sequence: the prompt loses its
        start first (as the engine truncates long prompts); an answer longer than
        max_tokens - 1 loses its end."""
        prompt = self.prompt_ids(example.prompt)
        target = self.answer_ids(example.prompt, example.target)
        rejected = None if example.rejected is None else self.answer_ids(example.prompt, example.rejected)
        longest = max(len(target), len(rejected) if rejected is not None else 0)
        keep = max(1, min(len(prompt), max_tokens - longest))
        prompt = prompt[-keep:]
        room = max_tokens - keep
        return EncodedExample(
            prompt_ids=tuple(prompt),
            target_ids=tuple(target[:room]),
            rejected_ids=None if rejected is None else tuple(rejected[:room]),
            weight=float(example.weight),
        )


def length_buckets(limit: int) -> list[int]:
    """Padded lengths: powers of two and the midpoints 1.5·2^k, from MIN_BUCKET up to `limit`
    (included). Padding wastes at most a third of a batch, and a run compiles at most one step
    program per bucket it meets, whatever the data."""
    buckets, size = [], MIN_BUCKET
    while size < limit:
        buckets.append(size)
        if size * 3 // 2 < limit:
            buckets.append(size * 3 // 2)
        size *= 2
    buckets.append(limit)
    return buckets


def bucket_for(length: int, limit: int) -> int:
    for size in length_buckets(limit):
        if size >= length:
            return size
    raise ValueError(f"length {length} exceeds the limit {limit}")


def rows_of(example: EncodedExample) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (prompt, answer) sequences an example puts in a batch: one, or chosen then rejected."""
    rows = [(example.prompt_ids, example.target_ids)]
    if example.rejected_ids is not None:
        rows.append((example.prompt_ids, example.rejected_ids))
    return rows


def label_width(examples: list[EncodedExample], limit: int) -> int:
    """Scored positions per row for a whole run: the bucket of its longest answer. One width per
    run keeps the number of compiled programs that of the sequence buckets."""
    longest = max(len(answer) for example in examples for _, answer in rows_of(example))
    return bucket_for(longest, limit)


def batch_schedule(examples: list[EncodedExample], batch_rows: int, steps: int, seed: int) -> list[list[int]]:
    """Example indices of every step's batch: a pure function of the data and the seed, so a
    resumed run sees the batches an uninterrupted one would.

    Each epoch visits the examples in a fresh seeded permutation; batches are filled in that
    order and continue into the next epoch (a dataset smaller than a batch repeats within it).
    A DPO pair takes two rows and is never split: when it does not fit, the batch is closed
    with padding rows and the pair opens the next one."""
    if any(example.is_pair for example in examples) and batch_rows < 2:
        raise ValueError("DPO pairs need batch_size >= 2")
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    epoch = 0
    while len(batches) < steps:
        order = np.random.default_rng([seed, epoch]).permutation(len(examples))
        epoch += 1
        for index in order:
            need = 2 if examples[index].is_pair else 1
            if used + need > batch_rows:
                batches.append(current)
                current, used = [], 0
                if len(batches) == steps:
                    break
            current.append(int(index))
            used += need
    return batches


def build_batch(
    examples: list[EncodedExample],
    indices: list[int],
    *,
    batch_rows: int,
    label_width: int,
    max_tokens: int,
    reference: dict[int, tuple[float, float]] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Arrays for one step and its count of real tokens.

    Rows hold prompt + answer without the answer's last token (which is only ever predicted),
    right-padded to a length bucket: causal attention keeps padding out of every real
    position. label_positions[r, j] is the position whose logits predict labels[r, j].
    Pairs name their chosen and rejected rows; `reference` gives each pair's reference
    log-probabilities (sums over the answer), computed before training."""
    rows: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    sft_weight: list[float] = []
    pairs: list[tuple[int, int, float, float, float]] = []
    for index in indices:
        example = examples[index]
        start = len(rows)
        rows.extend(rows_of(example))
        if example.is_pair:
            sft_weight.extend([0.0, 0.0])
            ref_chosen, ref_rejected = (reference or {}).get(index, (0.0, 0.0))
            pairs.append((start, start + 1, example.weight, ref_chosen, ref_rejected))
        else:
            sft_weight.append(example.weight)
    if len(rows) > batch_rows:
        raise ValueError(f"{len(rows)} rows do not fit a batch of {batch_rows}")
    inputs = [prompt + answer[:-1] for prompt, answer in rows]
    length = bucket_for(max(len(tokens) for tokens in inputs), max_tokens)
    width = min(label_width, length)
    pair_slots = max(1, batch_rows // 2)

    tokens = np.zeros((batch_rows, length), np.int32)
    label_positions = np.zeros((batch_rows, width), np.int32)
    labels = np.zeros((batch_rows, width), np.int32)
    label_mask = np.zeros((batch_rows, width), np.float32)
    for r, ((prompt, answer), sequence) in enumerate(zip(rows, inputs, strict=True)):
        tokens[r, : len(sequence)] = sequence
        label_positions[r, : len(answer)] = np.arange(len(prompt) - 1, len(prompt) - 1 + len(answer))
        labels[r, : len(answer)] = answer
        label_mask[r, : len(answer)] = 1.0
    weights = np.zeros(batch_rows, np.float32)
    weights[: len(sft_weight)] = sft_weight
    pair_arrays = np.zeros((pair_slots, 2), np.int32)
    pair_weight = np.zeros(pair_slots, np.float32)
    pair_reference = np.zeros((pair_slots, 2), np.float32)
    for p, (chosen, rejected, weight, ref_chosen, ref_rejected) in enumerate(pairs):
        pair_arrays[p] = (chosen, rejected)
        pair_weight[p] = weight
        pair_reference[p] = (ref_chosen, ref_rejected)
    batch = {
        "tokens": tokens,
        "label_positions": label_positions,
        "labels": labels,
        "label_mask": label_mask,
        "sft_weight": weights,
        "pair_rows": pair_arrays,
        "pair_weight": pair_weight,
        "pair_reference": pair_reference,
    }
    return batch, sum(len(prompt) + len(answer) for prompt, answer in rows)
