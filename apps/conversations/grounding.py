"""Grounds an answer in the conversation's bound contexts (NotebookLM-style).

Retrieval is scoped to the conversation owner's own contexts (enforced in SQL by the knowledge
selectors). When nothing relevant is found the answer says so, without the model, and the miss
is recorded as a knowledge gap.
"""

from dataclasses import dataclass, field


@dataclass
class Grounding:
    context_ids: list[str]
    context_names: list[str]
    chunks: list = field(default_factory=list)
    best_similarity: float | None = None
    gap_id: str | None = None

    @property
    def found(self) -> bool:
        return bool(self.chunks)

    def system_text(self, template: str) -> str:
        passages = "\n\n".join(
            f"[{index}] ({chunk.citation})\n{chunk.text.strip()}" for index, chunk in enumerate(self.chunks, start=1)
        )
        return template.replace("{passages}", passages)

    def not_found_answer(self, template: str) -> str:
        return template.replace("{contexts}", ", ".join(self.context_names))

    def receipt(self) -> dict:
        return {
            "context_ids": self.context_ids,
            "found": self.found,
            "best_similarity": self.best_similarity,
            "knowledge_gap_id": self.gap_id,
            "chunks": [
                {
                    "index": index,
                    "chunk_id": chunk.chunk_id,
                    "file_id": str(chunk.file_id),
                    "file_name": chunk.file_name,
                    "citation": chunk.citation,
                    "score": round(chunk.score, 6),
                    "similarity": round(chunk.similarity, 4),
                }
                for index, chunk in enumerate(self.chunks, start=1)
            ],
        }


def ground(*, query: str, k: int, conversation=None, actor=None, context_ids=None) -> Grounding | None:
    """Retrieval over the conversation's bound contexts (or, outside a chat, the actor's contexts
    named by id): None when there are none; otherwise what it found (maybe nothing)."""
    from apps.knowledge import selectors as knowledge_selectors
    from apps.knowledge import services as knowledge_services
    from apps.knowledge.models import Context

    if conversation is not None:
        actor = conversation.owner
        contexts = conversation.contexts.filter(owner_id=conversation.owner_id)
    else:
        contexts = Context.objects.filter(owner=actor, pk__in=context_ids or [])
    contexts = list(contexts.values_list("pk", "name"))
    if not contexts:
        return None
    context_ids = [str(pk) for pk, _ in contexts]
    result = knowledge_selectors.retrieve(actor=actor, context_ids=context_ids, query=query, k=k)
    grounding = Grounding(
        context_ids=context_ids,
        context_names=[name for _, name in contexts],
        chunks=list(result.chunks),
        best_similarity=result.best_similarity,
    )
    if not grounding.found:
        gap = knowledge_services.knowledge_gap_record(
            actor=actor,
            query=query,
            context_ids=context_ids,
            conversation_id=conversation.pk if conversation is not None else None,
            best_score=result.best_similarity,
        )
        grounding.gap_id = str(gap.pk)
    return grounding


def context_snippets(message) -> list[dict]:
    """The passages an answer was grounded in, with their text, for API responses."""
    from apps.knowledge.models import Chunk

    cited = ((message.receipt or {}).get("retrieval") or {}).get("chunks") or []
    if not cited:
        return []
    texts = dict(
        Chunk.objects.filter(owner_id=message.owner_id, pk__in=[c["chunk_id"] for c in cited]).values_list("pk", "text")
    )
    return [
        {**c, "text": texts[c["chunk_id"]], "content": texts[c["chunk_id"]]} for c in cited if c["chunk_id"] in texts
    ]
