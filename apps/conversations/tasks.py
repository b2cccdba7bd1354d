from celery import shared_task

from apps.accounts.consumers import user_event_send
from apps.conversations import generation, services
from apps.conversations.models import Conversation, Message


# Not acks_late: replaying a half-streamed answer on another worker would duplicate tokens the
# user already saw. A dead worker's answer is failed by the reaper instead, and the user retries.
@shared_task(acks_late=False)
def generate_reply(message_id: str) -> str:
    outcome = generation.run_reply(message_id)
    message = Message.objects.filter(pk=message_id).select_related("conversation").first()
    if outcome in ("stop", "length") and message and not message.conversation.title:
        title_conversation.delay(str(message.conversation_id))
    return outcome


@shared_task(acks_late=False)
def generate_completion(request_id: str, user_id: str, messages: list, params: dict) -> str:
    return generation.run_completion(request_id, user_id, messages, params)


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
