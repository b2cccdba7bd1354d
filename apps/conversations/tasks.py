from celery import shared_task

from apps.accounts.consumers import user_event_send
from apps.conversations import generation, services, state
from apps.conversations.models import Conversation, Message


# Not acks_late: replaying a half-streamed answer on another worker would duplicate tokens the
# user already saw. A dead worker's answer is failed by the reaper instead, and the user retries.
@shared_task(acks_late=False)
def generate_reply(message_id: str) -> str:
    outcome = generation.run_reply(message_id)
    message = Message.objects.filter(pk=message_id).select_related("conversation").first()
    if (
        outcome in ("stop", "length")
        and message
        and message.conversation.origin == "chat"
        and not message.conversation.title
    ):
        title_conversation.delay(str(message.conversation_id))
    return outcome


@shared_task(acks_late=False)
def generate_tool_invocation(
    user_id: str, tool_id: str, inputs_key: str, conversation_id: str | None, context_id: str | None
) -> dict:
    """Run one tool outside a chat (POST /v1/tools/{id}/invoke); returns its outputs. The inputs
    wait in Redis under `inputs_key` (see state.tool_inputs_put)."""
    inputs = state.tool_inputs_take(inputs_key)
    if inputs is None:
        return {"status": "error", "error": "The tool call's inputs expired before a worker took it; try again."}
    return generation.run_tool(
        user_id=user_id, tool_id=tool_id, inputs=inputs, conversation_id=conversation_id, context_id=context_id
    )


@shared_task(acks_late=False)
def title_conversation(conversation_id: str) -> str | None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None or conversation.title:
        return None
    title = generation.run_title(conversation)
    if title and services.conversation_title_set(conversation=conversation, title=title):
        user_event_send(
            user_id=conversation.owner_id,
            event="conversation.title",
            data={"conversation_id": str(conversation.pk), "title": title[:80]},
        )
        return title
    return None


@shared_task
def reap_stalled_generations() -> int:
    return services.generations_reap_stalled()
