import pytest

from apps.knowledge import selectors, services
from apps.knowledge.models import Chunk, KnowledgeGap, RetrievalConfig
from apps.knowledge.tests.conftest import HANDBOOK

pytestmark = pytest.mark.django_db

GENERATOR_MANUAL = """# Generator manual

## Fault codes

Fault code QX-7731 means the coolant pump on the backup diesel generator has lost prime.
Bleed the pump at the brass valve, then restart the generator from the local panel.

## Fuel

The backup generator burns arctic-grade diesel from the day tank, which holds 900 litres
and must be topped up from the main store whenever it falls below one third.
"""


@pytest.fixture
def station(user):
    handbook = services.file_upload(actor=user, name="handbook.md", content=HANDBOOK.encode())
    manual = services.file_upload(actor=user, name="generator.md", content=GENERATOR_MANUAL.encode(), folder="ops/power")
    services.file_ingest(file_id=handbook.pk)
    services.file_ingest(file_id=manual.pk)
    context = services.context_create(actor=user, name="Station", file_ids=[handbook.pk])
    return {"handbook": handbook, "manual": manual, "context": context}


def test_the_chunk_that_answers_the_question_comes_first(user, station):
    results = selectors.retrieve_for_prompt(
        actor=user,
        context_ids=[station["context"].pk],
        query="At what temperature does the reactor shut itself down?",
    )

    assert results, "something relevant was found"
    best = results[0]
    assert "840 degrees Celsius" in best.text
    assert best.file_id == str(station["handbook"].pk) and best.file_name == "handbook.md"
    assert best.chunk_id == Chunk.objects.get(file=station["handbook"], text__contains="840 degrees").pk
    assert "Reactor safety" in best.location and best.citation.startswith("handbook.md, ")
    assert best.vector_rank == 1 and best.fulltext_rank is not None
    assert best.score == pytest.approx(1 / 61 + 1 / (60 + best.fulltext_rank))
    assert all(result.file_id == str(station["handbook"].pk) for result in results), "only files in the context"
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_other_questions_find_their_own_sections(user, station):
    context_ids = [station["context"].pk]
    for question, expected in [
        ("When is dinner served?", "dinner at seven"),
        ("How close can I get to the elephant seals?", "fifteen\nmetres"),
        ("How often does the ferry to the station sail?", "every second Tuesday"),
    ]:
        results = selectors.retrieve_for_prompt(actor=user, context_ids=context_ids, query=question, k=3)
        assert expected in results[0].text, (question, results[0].text)


def test_k_limits_the_result(user, station):
    results = selectors.retrieve_for_prompt(actor=user, context_ids=[station["context"].pk], query="station", k=2)
    assert len(results) <= 2


def test_another_user_retrieves_nothing_of_the_first_users_chunks(user, other_user, station):
    question = "At what temperature does the reactor shut itself down?"
    own_context = services.context_create(actor=other_user, name="Station")

    assert selectors.retrieve_for_prompt(actor=other_user, context_ids=[own_context.pk], query=question) == []
    # Even naming the first user's context id reaches nothing: contexts and chunks are owner-scoped in SQL.
    stolen = selectors.retrieve(actor=other_user, context_ids=[station["context"].pk, own_context.pk], query=question)
    assert stolen.chunks == [] and stolen.candidates == 0 and stolen.searched_files == 0


def test_the_second_user_only_ever_sees_their_own_identical_document(user, other_user, station):
    copy = services.file_upload(actor=other_user, name="handbook.md", content=HANDBOOK.encode())
    services.file_ingest(file_id=copy.pk)
    context = services.context_create(actor=other_user, name="Mine", file_ids=[copy.pk])

    results = selectors.retrieve_for_prompt(
        actor=other_user, context_ids=[context.pk], query="At what temperature does the reactor shut itself down?"
    )

    assert results and "840 degrees" in results[0].text
    first_users_chunks = set(Chunk.objects.filter(owner=user).values_list("id", flat=True))
    assert not first_users_chunks & {result.chunk_id for result in results}
    assert {result.file_id for result in results} == {str(copy.pk)}


def test_exact_terms_are_found_through_full_text(user, station):
    context = services.context_create(actor=user, name="Power", folders=["ops"])
    results = selectors.retrieve_for_prompt(actor=user, context_ids=[context.pk], query="QX-7731")

    assert results and "QX-7731" in results[0].text
    assert results[0].fulltext_rank == 1


def test_a_word_match_is_relevant_at_a_lower_similarity(user, station):
    result = selectors.retrieve(actor=user, context_ids=[station["context"].pk], query="laundry day")

    assert result.chunks and "Laundry runs on Thursdays" in result.chunks[0].text
    best = result.chunks[0]
    assert best.fulltext_rank == 1 and best.similarity < result.min_similarity


def test_folders_in_a_context_include_the_files_below_them(user, station):
    context = services.context_create(actor=user, name="Ops", folders=["ops"])
    assert selectors.context_file_ids(actor=user, context_ids=[context.pk]) == [station["manual"].pk]
    services.context_folder_add(context=context, path="op")  # a prefix of a name is not a parent folder
    services.context_folder_remove(context=context, path="ops")
    assert selectors.context_file_ids(actor=user, context_ids=[context.pk]) == []


def test_nothing_relevant_returns_nothing_and_the_gap_can_be_recorded(user, station):
    question = "What is the best recipe for sourdough bread with rye flour?"
    result = selectors.retrieve(actor=user, context_ids=[station["context"].pk], query=question)

    assert result.chunks == [] and not result.found
    assert result.candidates > 0 and result.best_similarity < result.min_similarity

    gap = services.knowledge_gap_record(
        actor=user, query=question, context_ids=[station["context"].pk], best_score=result.best_similarity
    )
    assert KnowledgeGap.objects.get(pk=gap.pk).owner == user
    assert list(gap.contexts.all()) == [station["context"]]
    assert list(selectors.knowledge_gap_list(actor=user)) == [gap]


def test_the_relevance_threshold_is_data(user, station):
    question = "What is the best recipe for sourdough bread with rye flour?"
    RetrievalConfig.objects.update_or_create(pk=1, defaults={"min_similarity": -1.0})
    assert selectors.retrieve_for_prompt(actor=user, context_ids=[station["context"].pk], query=question, k=2)


def test_a_gap_never_links_another_users_context(user, other_user, station):
    gap = services.knowledge_gap_record(actor=other_user, query="anything", context_ids=[station["context"].pk])
    assert gap.contexts.count() == 0
    assert list(selectors.knowledge_gap_list(actor=user)) == []


def test_failed_files_are_not_searched(user, station):
    station["handbook"].status = "failed"
    station["handbook"].save()
    assert selectors.retrieve_for_prompt(actor=user, context_ids=[station["context"].pk], query="reactor") == []


def test_empty_and_unknown_inputs(user, station):
    assert selectors.retrieve_for_prompt(actor=user, context_ids=[], query="reactor") == []
    assert selectors.retrieve_for_prompt(actor=user, context_ids=[station["context"].pk], query="   ") == []
    assert selectors.retrieve_for_prompt(actor=user, context_ids=["not-a-uuid"], query="reactor") == []
    only_stopwords = selectors.retrieve(actor=user, context_ids=[station["context"].pk], query="the of and")
    assert only_stopwords.candidates > 0, "the vector search still runs when full text has no terms"
