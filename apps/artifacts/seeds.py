"""Behaviour every installation starts with: the chat tools and the default chat workflow.

Created by the data migration 0002 and, when missing (e.g. after a test database is flushed),
again on post_migrate. Existing artifacts are never overwritten: a changed seed ships as a new
migration that adds a version, so admins' edits are kept.
"""

import json
from pathlib import Path

from django.conf import settings

DEFAULT_WORKFLOW = "chat.default"

TOOLS = [
    {
        "kind": "tool.spec",
        "name": "llm.generic_chat_v1",
        "description": "A plain answer from the model to the conversation so far.",
        "handler": "llm.generic_chat",
        "inputs": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}, "system_prompt": {"type": "string"}},
            "required": ["message"],
        },
        "outputs": ["content", "finish_reason"],
        "streams": True,
        "timeout_ms": 60000,
        "retries": 1,
    },
    {
        "kind": "tool.spec",
        "name": "rag.answer_with_context_v1",
        "description": "An answer grounded in the conversation's bound contexts, citing numbered passages; "
        "says so plainly when the documents hold nothing relevant.",
        "handler": "rag.answer_with_context",
        "inputs": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}, "k": {"type": "integer", "minimum": 1}},
            "required": ["message"],
        },
        "outputs": ["content", "finish_reason", "retrieval"],
        "streams": True,
        "timeout_ms": 60000,
        "retries": 1,
    },
    {
        "kind": "tool.spec",
        "name": "llm.intent_classifier_v1",
        "description": "The intent of a message (question, task or smalltalk): the label whose examples are "
        "nearest in MiniLM embedding space. Edit the examples to teach it.",
        "handler": "llm.intent_classifier",
        "inputs": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}},
            "required": ["message"],
        },
        "outputs": ["intent", "confidence"],
        "timeout_ms": 15000,
        "retries": 1,
        "config": {
            "k": 3,
            "examples": {
                "question": [
                    "What is the capital of France?",
                    "When does the warranty expire?",
                    "Who wrote this report?",
                    "How many days of leave do I get?",
                    "What does the contract say about termination?",
                    "Why did sales drop in March?",
                    "Which version fixed the bug?",
                    "Where is the data stored?",
                    "What time does the office open?",
                    "Who is the author of Pride and Prejudice?",
                    "How tall is Mount Everest?",
                    "What is the boiling point of water?",
                    "Is the gym open on Sundays?",
                    "What year did the war end?",
                    "How much does the premium plan cost?",
                    "What is the deadline for the application?",
                ],
                "task": [
                    "Summarise this document for me.",
                    "Write an email to my landlord about the broken heating.",
                    "Translate this paragraph into German.",
                    "Explain how photosynthesis works.",
                    "Give me a list of ideas for a birthday party.",
                    "Fix this SQL query.",
                    "Draft a short speech for a wedding.",
                    "Compare these two options.",
                    "Write a poem about autumn.",
                    "Help me plan a week of meals.",
                    "Rewrite this sentence to sound more formal.",
                    "Create a workout schedule for me.",
                    "Explain recursion with an example.",
                    "Generate five names for a bakery.",
                ],
                "smalltalk": [
                    "Hello!",
                    "Hi there, how are you?",
                    "Thanks, that was helpful.",
                    "Good morning",
                    "Thank you very much!",
                    "Bye, see you later.",
                    "Nice to meet you.",
                    "ok cool",
                    "hey",
                    "Good night!",
                    "How's it going?",
                    "Great, thanks!",
                    "lol",
                    "Have a nice day.",
                ],
            },
        },
    },
]

TOOLS += [
    {
        "kind": "tool.spec",
        "name": "corrections.recall_v1",
        "description": "Correction memory: the user's own corrections of prompts like this one (cosine at least "
        "min_similarity), given to the model as guidance before any training happens. A newer correction "
        "replaces an older one whose prompt is within replace_similarity.",
        "handler": "corrections.recall",
        "inputs": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}},
            "required": ["message"],
        },
        "outputs": ["corrections_text", "correction_ids"],
        "timeout_ms": 10000,
        "retries": 1,
        "config": {
            "min_similarity": 0.80,
            "max_items": 3,
            "replace_similarity": 0.95,
            "template": "The user has corrected earlier answers:\n{items}",
        },
    },
    {
        "kind": "tool.spec",
        "name": "memory.recall_v1",
        "description": "Long-term memory: what the user asked to be remembered, the nearest items of the last "
        "window_days plus pinned ones.",
        "handler": "memory.recall",
        "inputs": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}},
            "required": ["message"],
        },
        "outputs": ["memory_text", "memory_ids"],
        "timeout_ms": 10000,
        "retries": 1,
        "config": {
            "window_days": 14,
            "max_items": 3,
            "min_similarity": 0.2,
            # The user's words are first person; framed as what the user said, the small default
            # model answers "What operating system do I use?" with Fedora (other framings: not).
            "template": "What you know about the user:\n{items}",
            "item_template": "- The user said: {text}",
        },
    },
    {
        "kind": "tool.spec",
        "name": "memory.extract_v1",
        "description": 'Stores what a message like "remember that I use Fedora" asks to remember.',
        "handler": "memory.extract",
        "inputs": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}},
            "required": ["message"],
        },
        "outputs": ["remembered"],
        "timeout_ms": 10000,
        "retries": 1,
        "config": {
            "patterns": [
                "^\\s*(?:please\\s+)?(?:remember|keep in mind|note)\\s*(?:that\\s+|:\\s*)?(?P<fact>.+?)\\s*[.!]?\\s*$",
            ]
        },
    },
]

DEFAULT_WORKFLOW_DESCRIPTION = (
    "Every chat's default: store what the user asks to remember, recall their corrections of similar "
    "prompts and their memory, classify the message, answer from the conversation's documents when it has "
    "any (and the message is not small talk), else answer plainly."
)

WORKFLOW = {
    "kind": "workflow.chat",
    "entrypoint": "remember",
    "timeout_ms": 300000,
    "defaults": {
        # Measured with bench/quality.py: naming "Liminal" here brought French-style openings
        # ("La femme est...") from the small default model; this one answered 23/30 against 20/30
        # for greedy decoding with no system prompt.
        "system_prompt": "You are a helpful assistant. Answer clearly and concisely.",
        "summary_prompt": "Summarise the conversation below in a few sentences, keeping names, facts, decisions "
        "and open questions.",
        "grounded_prompt": "Answer from the numbered passages below, which come from the user's own documents. "
        "Cite the passages you use like [1]. If they do not contain the answer, say that you could not find it."
        "\n\n{passages}",
        "no_knowledge_answer": "I could not find anything about this in the documents of this conversation "
        "({contexts}), so I will not guess. Try rephrasing the question, or add a document that covers it.",
        # Few-shot completion: a small model names an exchange far better this way than when asked in
        # chat. {question} and {answer} are the first exchange, each on one line.
        "title_prompt": "Give each conversation a short title.\n\n"
        "User: How long should I boil an egg for a runny yolk?\nAssistant: About six minutes in boiling water.\n"
        "Title: Soft-boiled eggs\n\n"
        "User: Can you fix this SQL query that returns duplicate rows?\nAssistant: Add DISTINCT or a GROUP BY on "
        "the key columns.\nTitle: Removing duplicate SQL rows\n\n"
        "User: Recommend a novel set in Japan.\nAssistant: Try 'Kafka on the Shore' by Haruki Murakami.\n"
        "Title: Japanese novel recommendation\n\n"
        "User: {question}\nAssistant: {answer}\nTitle:",
        "retrieval_k": 4,
        "sampling": {"greedy": True, "temperature": 0, "top_p": 1.0, "repetition_penalty": 1.05, "max_tokens": 512},
        # Regenerate asks for a different answer: greedy decoding would repeat the same one.
        "regenerate_sampling": {"greedy": False, "temperature": 0.7, "top_p": 0.9},
    },
    "nodes": [
        {
            "id": "remember",
            "type": "tool_call",
            "tool": "memory.extract_v1",
            "inputs": {"message": "${input.message}"},
            "outputs": ["remembered"],
            "next": "recall",
            "on_error": "recall",
        },
        {
            "id": "recall",
            "type": "parallel",
            "branches": [{"next": "recall_corrections"}, {"next": "recall_memory"}],
            "next": "has_documents",
        },
        {
            "id": "recall_corrections",
            "type": "tool_call",
            "tool": "corrections.recall_v1",
            "inputs": {"message": "${input.message}"},
            "outputs": ["corrections_text", "correction_ids"],
            "next": "has_documents",
            "on_error": "has_documents",
        },
        {
            "id": "recall_memory",
            "type": "tool_call",
            "tool": "memory.recall_v1",
            "inputs": {"message": "${input.message}"},
            "outputs": ["memory_text", "memory_ids"],
            "next": "has_documents",
            "on_error": "has_documents",
        },
        # The intent only decides between the documents and a plain answer, so it is asked only
        # when documents are bound (it took 6-27 ms of every answer's time to first token).
        {
            "id": "has_documents",
            "type": "switch",
            "branches": [
                {"when": "input.has_contexts == false", "next": "plain"},
                {"when": "true", "next": "classify"},
            ],
        },
        {
            "id": "classify",
            "type": "tool_call",
            "tool": "llm.intent_classifier_v1",
            "inputs": {"message": "${input.message}"},
            "outputs": ["intent"],
            "next": "route",
            "on_error": "rag",
        },
        {
            "id": "route",
            "type": "switch",
            "branches": [
                {"when": "vars.intent == 'smalltalk'", "next": "plain"},
                {"when": "true", "next": "rag"},
            ],
        },
        {
            "id": "rag",
            "type": "tool_call",
            "tool": "rag.answer_with_context_v1",
            "inputs": {"message": "${input.message}", "notes": ["${vars.corrections_text}", "${vars.memory_text}"]},
            "next": "end",
        },
        {
            "id": "plain",
            "type": "tool_call",
            "tool": "llm.generic_chat_v1",
            "inputs": {"message": "${input.message}", "notes": ["${vars.corrections_text}", "${vars.memory_text}"]},
            "next": "end",
        },
        {"id": "end", "type": "end"},
    ],
}


DEFAULT_TRAINING_POLICY = "training.default"

TRAINING_POLICY = {
    "kind": "policy.training",
    "method": "sft+dpo",
    # Measured on the real SmolLM2 on 2 cores (workers/train tests): 20 steps of rank 8 at 2e-3
    # teach a fact in under two minutes; replaying the current version's own answers to unrelated
    # prompts 1:1 keeps what it knew (without replay, 40 corrections overwrite unrelated answers).
    "min_examples": 8,
    "max_steps": 24,
    "learning_rate": 0.001,
    "batch_size": 8,
    "rank": 8,
    "replay_fraction": 0.5,
    "time_budget_s": 300,
    "checkpoint_every": 5,
    "gate": {"held_out_fraction": 0.1, "max_regression": 0.05, "min_held_out": 8},
    # 40 new corrections, liked answers or picks start a job; so does a drop of a quarter in the
    # share of thumbs up over the latest 20, or a day with something new. No automatic job
    # within 30 minutes of the last.
    "triggers": {
        "new_signals": 40,
        "schedule_hours": 24,
        "cooldown_minutes": 30,
        "satisfaction": {"window": 20, "drop": 0.25},
    },
    # Topics in users' signals (MiniLM cosine). An event joins the nearest cluster within 0.55 of
    # its centroid; the periodic pass drains fragments into larger clusters, merges centroids
    # within 0.6 and splits clusters whose members average under 0.45 from their centroid.
    # Merging at 0.85 left one topic in two or three active fragments in 10 of 12 arrival
    # orders of 30 + 30 + 10 questions (apps/training/tests/topics.py); 0.6 gave two clean
    # clusters in 12 of 12, and no two topics' centroids came closer than 0.32. A topic of 20
    # signals, 70% liked and cohesive (0.6), is proposed as a skill adapter for an admin.
    "clustering": {
        "join_similarity": 0.55,
        "merge_similarity": 0.6,
        "split_cohesion": 0.45,
        "min_split_size": 6,
        "active_size": 5,
        "label_samples": 6,
        "skill": {"min_events": 20, "min_positive_ratio": 0.7, "min_cohesion": 0.6, "auto_approve": False},
    },
}


DEFAULT_ROUTING_POLICY = "routing.default"
# The skill threshold, measured with the MiniLM encoder on two 4-question topic centroids
# (apps/router/tests/test_routing.py): on-topic questions 0.39-0.69, off-topic ones 0.02-0.24.

ROUTING_POLICY = {
    "kind": "policy.routing",
    "description": "Your persona adapter on every answer; the nearest skill adapter when the message is near "
    "its centroid; nothing when the message is high-risk.",
    "max_active_adapters": 3,
    "weight_floor": 0.05,
    "rules": [
        {
            "id": "persona",
            "when": "true",
            "action": {"type": "activate_adapter_by_type", "adapter_type": "persona", "weight": 1.0},
        },
        {
            "id": "nearest_skill",
            "when": "adapter_similarity != null and adapter_similarity >= 0.35",
            "action": {"type": "activate_adapter_by_type", "adapter_type": "skill", "weight": "similarity"},
        },
        {"id": "safety_off", "when": "safety_risk == 'high'", "action": {"type": "deactivate_all_adapters"}},
    ],
}


DEFAULT_ARCHITECT_POLICY = "architect.default"

# The architect (apps/configops/architect.py). The prompt fills {kind}, {name}, {schema}, {body},
# {metrics} and {goal}; the schema comes first, since a prompt too long for the model loses its
# beginning, not the task.
ARCHITECT_POLICY = {
    "kind": "policy.architect",
    "prompt": "JSON Schema of a {kind} artifact:\n{schema}\n\n"
    'The artifact "{name}" now:\n{body}\n\n'
    "Metrics of the last days (satisfaction is the share of thumbs up):\n{metrics}\n\n"
    "Goal: {goal}\n\n"
    "Propose one small change to the artifact as an RFC 6902 JSON Patch. Answer with JSON only, exactly "
    'of this form: {"ops": [{"op": "replace", "path": "/some/path", "value": 1}], '
    '"justification": "why, in one or two sentences"}',
    "default_goal": "Improve the users' satisfaction with the smallest safe change.",
    "targets": [
        {"kind": "policy.routing", "name": DEFAULT_ROUTING_POLICY},
        {"kind": "workflow.chat", "name": DEFAULT_WORKFLOW},
    ],
    "metrics_days": 7,
    "max_tokens": 384,
}


def _mirror(artifact, version):
    path = Path(settings.SHARED_FS_ROOT) / "artifacts" / str(artifact.pk) / f"v{version.version:04d}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "artifact_id": str(artifact.pk),
            "version": version.version,
            "created_by": "system",
            "change_note": version.change_note,
            "parent_version": None,
            "created_at": version.created_at.isoformat(),
            "body": version.body,
        }
        path.write_text(json.dumps(record, indent=2, sort_keys=True))
    except OSError:
        pass


def _seed_one(Artifact, ArtifactVersion, kind, name, description, body):
    artifact, created = Artifact.objects.get_or_create(
        owner=None,
        kind=kind,
        name=name,
        defaults={"type": kind.split(".")[0], "description": description, "visibility": "global"},
    )
    if created:
        version = ArtifactVersion.objects.create(
            artifact=artifact, version=1, body=body, created_by="system", change_note="Seeded."
        )
        artifact.current_version = version
        artifact.save(update_fields=["current_version"])
        _mirror(artifact, version)


def _seeded() -> list[tuple[str, str, str, dict]]:
    """Every global artifact this file seeds, as (kind, name, description, body): the tools first,
    since the workflow names them."""
    return [("tool.spec", tool["name"], tool["description"], tool) for tool in TOOLS] + [
        ("workflow.chat", DEFAULT_WORKFLOW, DEFAULT_WORKFLOW_DESCRIPTION, WORKFLOW),
        (
            "policy.training",
            DEFAULT_TRAINING_POLICY,
            "How persona adapters are trained, and what the gate demands before one is promoted.",
            TRAINING_POLICY,
        ),
        (
            "policy.routing",
            DEFAULT_ROUTING_POLICY,
            "Which adapters answer a message, for users without a routing policy of their own.",
            ROUTING_POLICY,
        ),
        (
            "policy.architect",
            DEFAULT_ARCHITECT_POLICY,
            "How the architect asks the model for patches: its prompt, the artifacts of its nightly run, the "
            "metrics window and the answer's length.",
            ARCHITECT_POLICY,
        ),
    ]


def seed_missing(Artifact, ArtifactVersion) -> None:
    """Create the seeded artifacts that do not exist (models may be a migration's historical ones)."""
    for kind, name, description, body in _seeded():
        _seed_one(Artifact, ArtifactVersion, kind, name, description, body)


def upgrade_seeded(Artifact, ArtifactVersion) -> None:
    """Move a global seeded artifact to this file's body when its current version is still one
    the system wrote (never over an admin's or the model's edit)."""
    for kind, name, _, body in _seeded():
        artifact = Artifact.objects.filter(owner=None, kind=kind, name=name).first()
        current = ArtifactVersion.objects.filter(pk=artifact.current_version_id).first() if artifact else None
        if current is None or current.created_by != "system" or current.body == body:
            continue
        version = ArtifactVersion.objects.create(
            artifact=artifact,
            version=current.version + 1,
            body=body,
            created_by="system",
            parent=current,
            change_note="Upgraded with the platform's seeded defaults.",
        )
        artifact.current_version = version
        artifact.save(update_fields=["current_version"])
        _mirror(artifact, version)


def seeded_names() -> list[str]:
    return [name for _, name, _, _ in _seeded()]
