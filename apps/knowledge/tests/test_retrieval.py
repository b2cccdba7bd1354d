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
    manual = services.file_upload(
        actor=user, name="generator.md", content=GENERATOR_MANUAL.encode(), folder="ops/power"
    )
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


def test_fulltext_query_drops_common_words_and_asks_for_two_of_many():
    from apps.knowledge.selectors import fulltext_query

    assert fulltext_query([], 0.01) == selectors.FulltextQuery(None, None)
    few = fulltext_query([("laundri", 0, 0), ("day", 0, 0)], 0.01)
    assert few.match == few.rank == "'laundri' | 'day'" or few.match == "'day' | 'laundri'"
    many = fulltext_query([("reactor", 0, 0), ("temperatur", 0, 0), ("shut", 0, 0)], 0.01)
    assert many.match.count("&") == 3 and many.rank.count("|") == 2
    # In a large library a word in 30% of 100k chunks is dropped; a rare one carries the query.
    mixed = fulltext_query([("code", 30_000, 0.3), ("zebra", 0, 0)], 0.01)
    assert mixed.match == "'zebra'"
    # A word in 30% of a 40-chunk library is still worth searching for.
    small = fulltext_query([("code", 12, 0.3), ("zebra", 0, 0)], 0.01)
    assert "'code'" in small.match
    assert fulltext_query([("code", 30_000, 0.3)], 0.01).match is None
    both_common = fulltext_query([("gpl", 5_000, 0.05), ("compat", 6_000, 0.06)], 0.01)
    assert both_common.match in {"'gpl' & 'compat'", "'compat' & 'gpl'"}
    assert fulltext_query([("it's", 0, 0)], 0.01).match == "'it''s'"


def _random_chunks(owner, file, count, rng, dim=384):
    import numpy as np

    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        Chunk(
            owner=owner,
            file=file,
            ordinal=index,
            text=f"passage {index}",
            token_count=2,
            char_start=0,
            char_end=9,
            content_sha256=f"{index:064x}",
            embedding=vector,
            encoder_id="test-encoder",
            embedding_dim=dim,
        )
        for index, vector in enumerate(vectors)
    ]


def test_iterative_scan_fills_k_rows_when_the_filter_rejects_most_neighbours(user, other_user):
    """With only the HNSW index to order by, a plain HNSW scan sees ef_search neighbours and then
    filters them, so a user owning a sliver of the table gets fewer than k rows; the iterative scan
    that hybrid_search switches on keeps going until k of the user's rows are found."""
    import numpy as np
    from django.db import connection, transaction

    from apps.knowledge.models import KnowledgeFile

    rng = np.random.default_rng(0)
    theirs = KnowledgeFile.objects.create(
        owner=other_user, name="noise.txt", storage_path="x", kind="text", size_bytes=1, sha256="a" * 64
    )
    mine = KnowledgeFile.objects.create(
        owner=user, name="mine.txt", storage_path="y", kind="text", size_bytes=1, sha256="b" * 64, status="ready"
    )
    Chunk.objects.bulk_create(_random_chunks(other_user, theirs, 2000, rng), batch_size=500)
    Chunk.objects.bulk_create(_random_chunks(user, mine, 15, rng))
    query = rng.standard_normal(384)
    query = (query / np.linalg.norm(query)).tolist()
    with connection.cursor() as cursor:  # all of this is rolled back with the test's transaction
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the deferred foreign-key checks before DDL
        cursor.execute("ALTER TABLE knowledge_chunk DROP CONSTRAINT knowledge_chunk_file_ordinal_unique")
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'knowledge_chunk' "
            "AND indexname NOT IN ('knowledge_chunk_pkey', 'knowledge_chunk_embedding_hnsw')"
        )
        for (index,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{index}"')
        cursor.execute("ANALYZE knowledge_chunk")
        cursor.execute("SET LOCAL enable_seqscan = off")

    vector_sql = (
        "SELECT id FROM knowledge_chunk WHERE owner_id = %s AND file_id = ANY(%s) "
        "ORDER BY embedding <=> %s::vector LIMIT 10"
    )
    params = [user.pk, [mine.pk], selectors._vector_literal(query)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = 20")
        cursor.execute("SET LOCAL hnsw.iterative_scan = off")
        cursor.execute("EXPLAIN " + vector_sql, params)
        assert "knowledge_chunk_embedding_hnsw" in "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(vector_sql, params)
        assert len(cursor.fetchall()) < 10, "without iterative scan the filter starves the result"

    config = RetrievalConfig(candidates=10, ef_search=20)
    results = selectors.hybrid_search(
        actor=user, file_ids=[mine.pk], query="", query_vector=query, encoder_id="test-encoder", config=config
    )
    assert len([r for r in results if r.vector_rank is not None]) == 10
    assert {r.file_id for r in results} == {str(mine.pk)}
