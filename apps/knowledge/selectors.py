"""Reads for files, contexts, chunks and gaps, and hybrid retrieval; all scoped to the actor."""

import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from itertools import combinations

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Prefetch, Q, QuerySet

from apps.knowledge.embedding import current_encoder
from apps.knowledge.models import (
    TEXT_SEARCH_CONFIG,
    Chunk,
    Context,
    ContextFile,
    KnowledgeFile,
    KnowledgeGap,
    RetrievalConfig,
)
from workers.ingest import ALLOWED_EXTENSIONS

# ---------------------------------------------------------------- Files


def file_limits() -> dict:
    return {"allowed_extensions": list(ALLOWED_EXTENSIONS), "max_upload_bytes": settings.MAX_UPLOAD_BYTES}


def file_list(*, actor, context: Context | None = None, folder: str | None = None) -> QuerySet[KnowledgeFile]:
    files = KnowledgeFile.objects.filter(owner=actor)
    if context is not None:
        files = files.filter(pk__in=context_file_ids(actor=actor, context_ids=[context.pk], searchable_only=False))
    if folder:
        files = files.filter(Q(folder=folder) | Q(folder__startswith=f"{folder}/"))
    return files.order_by("-created_at")


def file_get(*, actor, file_id) -> KnowledgeFile | None:
    """The actor's file, or None: another user's file is indistinguishable from a missing one."""
    return KnowledgeFile.objects.filter(owner=actor, pk=file_id).first()


def file_folders(*, actor) -> list[str]:
    """Every folder that holds files, with its ancestors: ["a", "a/b", "c"]."""
    folders = set()
    for folder in KnowledgeFile.objects.filter(owner=actor).exclude(folder="").values_list("folder", flat=True):
        parts = folder.split("/")
        folders.update("/".join(parts[: depth + 1]) for depth in range(len(parts)))
    return sorted(folders)


# ---------------------------------------------------------------- Contexts


def context_list(*, actor) -> QuerySet[Context]:
    return Context.objects.filter(owner=actor).annotate(file_count=Count("file_links", distinct=True)).order_by("name")


def context_get(*, actor, context_id) -> Context | None:
    return (
        Context.objects.filter(owner=actor, pk=context_id)
        .prefetch_related(
            Prefetch("file_links", queryset=ContextFile.objects.select_related("file").order_by("file__name")),
            "folders",
        )
        .first()
    )


_SCOPE_SQL = """
SELECT f.id
FROM knowledge_knowledgefile f
WHERE f.owner_id = %(owner)s
  AND (NOT %(searchable_only)s OR f.status <> 'failed')
  AND (
    f.id IN (
      SELECT cf.file_id
      FROM knowledge_contextfile cf JOIN knowledge_context c ON c.id = cf.context_id
      WHERE c.owner_id = %(owner)s AND c.id = ANY(%(contexts)s)
    )
    OR EXISTS (
      SELECT 1
      FROM knowledge_contextfolder fo JOIN knowledge_context c ON c.id = fo.context_id
      WHERE c.owner_id = %(owner)s AND c.id = ANY(%(contexts)s)
        AND (f.folder = fo.path OR left(f.folder, length(fo.path) + 1) = fo.path || '/')
    )
  )
"""


def context_file_ids(*, actor, context_ids: Iterable, searchable_only: bool = True) -> list:
    """Ids of the actor's files in any of the contexts (directly or through a folder); with
    `searchable_only`, without files whose ingestion failed.

    Both the contexts and the files are filtered by owner, so another user's context id adds
    nothing.
    """
    context_ids = _uuid_list(context_ids)
    if not context_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_SCOPE_SQL, {"owner": actor.pk, "contexts": context_ids, "searchable_only": searchable_only})
        return [row[0] for row in cursor.fetchall()]


def _uuid_list(values: Iterable) -> list[str]:
    result = []
    for value in values or ():
        try:
            result.append(str(uuid.UUID(str(value))))
        except ValueError:
            continue
    return list(dict.fromkeys(result))


def context_chunks(*, actor, context: Context) -> QuerySet[Chunk]:
    """The chunks in the context, in file and reading order."""
    return (
        Chunk.objects.filter(owner=actor, file_id__in=context_file_ids(actor=actor, context_ids=[context.pk]))
        .select_related("file")
        .defer("embedding", "search_vector")
        .order_by("file__name", "file_id", "ordinal")
    )


def file_chunks(*, actor, file: KnowledgeFile) -> QuerySet[Chunk]:
    return (
        Chunk.objects.filter(owner=actor, file=file)
        .select_related("file")
        .defer("embedding", "search_vector")
        .order_by("ordinal")
    )


def chunk_get(*, actor, chunk_id) -> Chunk | None:
    return (
        Chunk.objects.filter(owner=actor, pk=chunk_id)
        .select_related("file")
        .defer("embedding", "search_vector")
        .first()
    )


# ---------------------------------------------------------------- Gaps


def knowledge_gap_list(*, actor, include_resolved: bool = False) -> QuerySet[KnowledgeGap]:
    gaps = KnowledgeGap.objects.filter(owner=actor).prefetch_related("contexts")
    if not include_resolved:
        gaps = gaps.filter(resolved_at__isnull=True)
    return gaps.order_by("-created_at")


def knowledge_gap_get(*, actor, gap_id) -> KnowledgeGap | None:
    return KnowledgeGap.objects.filter(owner=actor, pk=gap_id).first()


# ---------------------------------------------------------------- Retrieval


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: int
    file_id: str
    file_name: str
    ordinal: int
    text: str
    heading: str
    location: str
    page_start: int | None
    page_end: int | None
    line_start: int | None
    line_end: int | None
    score: float  # reciprocal rank fusion score; what the list is ordered by
    similarity: float  # cosine similarity of chunk and query, -1..1
    vector_rank: int | None  # 1-based rank in the vector search, None if not among its candidates
    fulltext_rank: int | None  # 1-based rank in the full-text search, None if it did not match

    @property
    def citation(self) -> str:
        """What a numbered citation shows: “handbook.pdf, page 3, Safety”."""
        return f"{self.file_name}, {self.location}" if self.location else self.file_name

    def as_dict(self) -> dict:
        # `id` and `content` for the seed system's clients, beside this system's `chunk_id` and `text`.
        return {**asdict(self), "id": self.chunk_id, "content": self.text, "citation": self.citation}


@dataclass(frozen=True)
class RetrievalResult:
    chunks: list[RetrievedChunk]  # relevant chunks, best first, at most k
    best_similarity: float | None  # best cosine similarity among all candidates; None if none
    candidates: int  # rows the two searches returned before the relevance threshold
    min_similarity: float
    searched_files: int = 0
    timings_ms: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.chunks)


_HYBRID_SQL = """
WITH vec AS MATERIALIZED (
    SELECT id, embedding <=> %(vector)s::vector AS distance
    FROM knowledge_chunk
    WHERE owner_id = %(owner)s AND encoder_id = %(encoder)s AND file_id = ANY(%(files)s)
    ORDER BY distance
    LIMIT %(candidates)s
), vec_ranked AS (
    -- relaxed_order can return rows slightly out of order; rank them exactly.
    SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM vec
), matched AS MATERIALIZED (
    -- Ranking costs a few microseconds a row; past this many matches the words are too
    -- unspecific for the full-text order to add much, and the vector side carries the query.
    SELECT c.id, c.search_vector
    FROM knowledge_chunk c
    WHERE c.owner_id = %(owner)s AND c.encoder_id = %(encoder)s AND c.file_id = ANY(%(files)s)
      AND c.search_vector @@ %(match_query)s::tsquery
    LIMIT %(max_matches)s
), fts AS MATERIALIZED (
    SELECT id, ts_rank_cd(search_vector, %(rank_query)s::tsquery) AS text_score
    FROM matched
    ORDER BY text_score DESC, id
    LIMIT %(candidates)s
), fts_ranked AS (
    SELECT id, row_number() OVER (ORDER BY text_score DESC, id) AS rank FROM fts
), fused AS (
    SELECT coalesce(v.id, t.id) AS id, v.rank AS vector_rank, t.rank AS fulltext_rank,
           coalesce(1.0 / (%(rrf_k)s + v.rank), 0) + coalesce(1.0 / (%(rrf_k)s + t.rank), 0) AS score
    FROM vec_ranked v FULL OUTER JOIN fts_ranked t ON v.id = t.id
)
SELECT c.id, c.file_id, f.name, c.ordinal, c.text, c.heading, c.location,
       c.page_start, c.page_end, c.line_start, c.line_end,
       fused.score::float8, (1 - (c.embedding <=> %(vector)s::vector))::float8 AS similarity,
       fused.vector_rank, fused.fulltext_rank
FROM fused
JOIN knowledge_chunk c ON c.id = fused.id
JOIN knowledge_knowledgefile f ON f.id = c.file_id
WHERE c.owner_id = %(owner)s
ORDER BY fused.score DESC, similarity DESC, c.id
"""

# The query's lexemes, each with the share of chunks that contain it when PostgreSQL's statistics
# know it as a common element (ANALYZE keeps these for tsvector columns); rarer ones have none.
_LEXEMES_SQL = f"""
WITH lexemes AS (
    SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('{TEXT_SEARCH_CONFIG}', %s))) AS lexeme
), common AS (
    SELECT m.lexeme, m.frequency
    FROM pg_stats s,
         unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS m(lexeme, frequency)
    WHERE s.schemaname = current_schema() AND s.tablename = 'knowledge_chunk' AND s.attname = 'search_vector'
)
SELECT l.lexeme, coalesce(common.frequency, 0) * (
    SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'knowledge_chunk'::regclass
) AS estimated_chunks, coalesce(common.frequency, 0) AS frequency
FROM lexemes l LEFT JOIN common ON common.lexeme = l.lexeme
"""
MAX_QUERY_TERMS = 8
# A term in fewer chunks than this is never "common", whatever its share: in a small library
# every word is in a few percent of the chunks, and scanning a few hundred rows costs nothing.
COMMON_TERM_MIN_CHUNKS = 1000


@dataclass(frozen=True)
class FulltextQuery:
    match: str | None  # tsquery text selecting candidate chunks; None: no full-text search
    rank: str | None  # tsquery text the candidates are ranked by


def _quoted(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def fulltext_query(lexemes: list[tuple[str, float, float]], max_term_frequency: float) -> FulltextQuery:
    """Which chunks the full-text side considers, from the query's lexemes and how common they are.

    Questions rarely repeat every word of the passage that answers them, so not all terms must
    match; but a word found in a large share of chunks says little and makes the search scan and
    rank most of the library. So: drop common terms (in more than `max_term_frequency` of all
    chunks, and in at least COMMON_TERM_MIN_CHUNKS); with one or two informative terms left, any
    may match; with more, at least two must ("minimum should match"); with only common terms,
    all of them must (and a single common term searches nothing: the vector side covers it).
    Candidates are ranked by all informative terms.
    """
    if not lexemes:
        return FulltextQuery(None, None)
    informative = sorted(
        (frequency, lexeme)
        for lexeme, chunks, frequency in lexemes
        if frequency <= max_term_frequency or chunks < COMMON_TERM_MIN_CHUNKS
    )[:MAX_QUERY_TERMS]
    terms = [_quoted(lexeme) for _, lexeme in informative]
    if not terms:
        if len(lexemes) < 2:  # one common word selects a large share of the library and ranks it poorly
            return FulltextQuery(None, None)
        every = " & ".join(_quoted(lexeme) for lexeme, _, _ in lexemes[:MAX_QUERY_TERMS])
        return FulltextQuery(every, every)
    any_term = " | ".join(terms)
    if len(terms) <= 2:
        return FulltextQuery(any_term, any_term)
    pairs = " | ".join(f"({a} & {b})" for a, b in combinations(terms, 2))
    return FulltextQuery(pairs, any_term)


def hybrid_search(
    *,
    actor,
    file_ids: list,
    query: str,
    query_vector: list[float],
    encoder_id: str,
    config: RetrievalConfig,
    k: int = 0,
) -> list[RetrievedChunk]:
    """Vector top-n and full-text top-n over the given files of the actor, fused with RRF.

    Runs in its own transaction so the pgvector settings stay local to it: iterative scan lets
    the HNSW index keep searching until enough rows pass the owner/file filter.
    """
    if not file_ids:
        return []
    candidates = max(1, config.candidates, k)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LEXEMES_SQL, [query])
        fulltext = fulltext_query(cursor.fetchall(), config.fulltext_max_term_frequency)
        cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(config.ef_search, candidates))])
        cursor.execute(
            _HYBRID_SQL,
            {
                "vector": _vector_literal(query_vector),
                "owner": actor.pk,
                "encoder": encoder_id,
                "files": list(file_ids),
                "candidates": candidates,
                "match_query": fulltext.match,
                "rank_query": fulltext.rank,
                "max_matches": config.fulltext_max_matches,
                "rrf_k": config.rrf_k,
            },
        )
        rows = cursor.fetchall()
    return [
        RetrievedChunk(
            chunk_id=row[0],
            file_id=str(row[1]),
            file_name=row[2],
            ordinal=row[3],
            text=row[4],
            heading=row[5],
            location=row[6],
            page_start=row[7],
            page_end=row[8],
            line_start=row[9],
            line_end=row[10],
            score=row[11],
            similarity=row[12],
            vector_rank=row[13],
            fulltext_rank=row[14],
        )
        for row in rows
    ]


def _vector_literal(vector) -> str:
    return "[" + ",".join(f"{float(value):.7g}" for value in vector) + "]"


def _is_relevant(chunk: RetrievedChunk, config: RetrievalConfig) -> bool:
    if chunk.similarity >= config.min_similarity:
        return True
    return chunk.fulltext_rank is not None and chunk.similarity >= config.fulltext_min_similarity


def retrieve(*, actor, context_ids: Iterable, query: str, k: int | None = None) -> RetrievalResult:
    """The chunks of the actor's contexts most relevant to `query`, best first.

    Only the actor's own chunks in the actor's own contexts are searched (enforced in SQL), and
    only relevant chunks are returned: cosine similarity at least `min_similarity`, or at least
    `fulltext_min_similarity` for chunks that also match the query's words. When none is,
    `chunks` is empty and `best_similarity` says how close the nearest one came.
    """
    config = RetrievalConfig.current()
    k = config.default_k if k is None else max(1, int(k))
    query = (query or "").strip()
    started = time.perf_counter()
    file_ids = context_file_ids(actor=actor, context_ids=context_ids)
    if not file_ids or not query:
        return RetrievalResult([], None, 0, config.min_similarity, len(file_ids))
    encoder = current_encoder()
    query_vector = encoder.encode([query], batch_size=1)[0]
    embedded = time.perf_counter()
    candidates = hybrid_search(
        actor=actor,
        file_ids=file_ids,
        query=query,
        query_vector=query_vector,
        encoder_id=encoder.encoder_id,
        config=config,
        k=k,
    )
    searched = time.perf_counter()
    relevant = [chunk for chunk in candidates if _is_relevant(chunk, config)][:k]
    return RetrievalResult(
        chunks=relevant,
        best_similarity=max((chunk.similarity for chunk in candidates), default=None),
        candidates=len(candidates),
        min_similarity=config.min_similarity,
        searched_files=len(file_ids),
        timings_ms={
            "embed": round(1000 * (embedded - started), 2),
            "search": round(1000 * (searched - embedded), 2),
        },
    )


def retrieve_for_prompt(*, actor, context_ids: Iterable, query: str, k: int | None = None) -> list[RetrievedChunk]:
    """What the chat orchestrator puts into a grounded prompt: at most k relevant chunks, best
    first; an empty list means nothing relevant (say so, and record a knowledge gap)."""
    return retrieve(actor=actor, context_ids=context_ids, query=query, k=k).chunks
