"""Builds the model prompt for an answer from the conversation's selected path.

When the whole path does not fit the context window, the oldest turns are summarised by the
model (cached in Redis, persisted on the conversation) and the summary stands in for them,
rather than silently dropping them.
"""

from dataclasses import dataclass, field

from django.conf import settings

from apps.accounts.ratelimit import state_redis
from apps.conversations import selectors, services
from apps.conversations.models import Message

SUMMARY_CACHE_TTL = 7 * 24 * 3600


@dataclass
class BuiltPrompt:
    text: str
    token_count: int
    summarised_through: str | None = None
    turns: list[dict] = field(default_factory=list)


def _turns(messages: list[Message]) -> list[dict]:
    turns = []
    for m in messages:
        if m.role == Message.Role.ASSISTANT and not m.content.strip():
            continue  # a failed or empty answer carries nothing for the model to continue from
        turns.append({"role": m.role, "content": m.content})
    return turns


def _render(engine, system: str, summary: str, turns: list[dict]) -> str:
    if summary:
        system = f"{system}\n\nSummary of the earlier conversation:\n{summary}".strip()
    # No system text at all: no system message, so the model's template applies its own default.
    head = [{"role": "system", "content": system}] if system else []
    return engine.render_chat([*head, *turns], add_generation_prompt=True)


def _count(engine, text: str) -> int:
    return len(engine.tokenizer.encode(text))


def build_reply_prompt(
    engine,
    *,
    assistant: Message,
    max_tokens: int,
    system_prompt: str,
    summary_prompt: str,
    grounding_text: str = "",
) -> BuiltPrompt:
    """The prompt for `assistant`: the system text (the workflow's, or the conversation's own when
    a client sent one), any grounding passages, and the path's turns, summarised if too long."""
    system = "\n\n".join(part for part in (system_prompt, grounding_text) if part)
    path = selectors.path_to(assistant.parent)
    budget = engine.context_length - max_tokens - 8
    turns = _turns(path)
    text = _render(engine, system, "", turns)
    count = _count(engine, text)
    if count <= budget:
        return BuiltPrompt(text=text, token_count=count, turns=turns)

    # Keep as many recent messages as fit in what the summary leaves; summarise the rest.
    conversation = assistant.conversation
    summary_budget = settings.CHAT_SUMMARY_MAX_TOKENS
    keep = len(path)
    while keep > 1:
        keep -= 1
        recent = _turns(path[-keep:])
        if _count(engine, _render(engine, system, "x " * summary_budget, recent)) <= budget:
            break
    older, recent_messages = path[: len(path) - keep], path[len(path) - keep :]
    if not older:
        # Only the newest message, and it alone is over the budget: nothing to summarise, so it
        # goes as it is and the engine keeps the prompt's end (truncate=True).
        return BuiltPrompt(text=text, token_count=count, turns=turns)
    summary = summarise(engine, conversation=conversation, older=older, summary_prompt=summary_prompt)
    turns = _turns(recent_messages)
    text = _render(engine, system, summary, turns)
    # If one message alone exceeds the window, the engine keeps the prompt's end (truncate=True).
    count = _count(engine, text)
    return BuiltPrompt(text=text, token_count=count, summarised_through=str(older[-1].pk), turns=turns)


def summarise(engine, *, conversation, older: list[Message], summary_prompt: str) -> str:
    from workers.llm import SamplingParams

    through = older[-1]
    if conversation.summary and conversation.summary_through_id == through.pk:
        return conversation.summary
    cache_key = f"summary:{conversation.pk}:{through.pk}"
    cached = state_redis().get(cache_key)
    if cached:
        summary = cached.decode()
    else:
        transcript = "\n".join(f"{m.role.upper()}: {m.content}" for m in older if m.content.strip())
        prompt = engine.render_chat(
            [
                {"role": "system", "content": summary_prompt},
                {"role": "user", "content": transcript},
            ]
        )
        result = engine.generate(
            prompt,
            SamplingParams(greedy=True, max_tokens=settings.CHAT_SUMMARY_MAX_TOKENS, repetition_penalty=1.1),
            truncate=True,
        )
        summary = result.text.strip()
        state_redis().set(cache_key, summary, ex=SUMMARY_CACHE_TTL)
    services.conversation_summary_set(conversation=conversation, summary=summary, through=through)
    return summary
