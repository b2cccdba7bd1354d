"""Retrieval benchmark: hybrid query latency and HNSW recall on 100k chunks, ingestion throughput.

    DEBUG=1 .venv/bin/python bench/retrieval.py [--chunks 100000] [--queries 300] [--real-chunks 300]

Runs against the configured PostgreSQL+pgvector (embedded by default) in a database of its own,
`liminal_bench_<pid>`, created with the project's migrations and dropped at the end; uploaded
files go to a temporary SHARED_FS_ROOT that is removed too.

What is real and what is generated:
  * Ingestion throughput: real files (Markdown/reST/text documentation shipped in the virtual
    environment) through the real pipeline (upload → extract → chunk → JAX encoder → pgvector),
    in this process, on whatever CPU/accelerator JAX finds.
  * The 100k-chunk corpus: embedding 100k chunks of ~200 tokens with the JAX encoder on a 2-core
    CPU takes hours (the script measures the rate), so the large corpus is generated: its texts
    are stitched from real sentences, and each vector is a noisy mixture of the *real* encoder
    vectors of the sentences the text contains. The vectors therefore have the anisotropy and
    cluster structure of real MiniLM embeddings, which is what HNSW recall depends on; queries
    are drawn the same way. The output says so again next to the figures.

Targets: hybrid query p95 < 50 ms, recall@10 (HNSW vs exact) ≥ 0.95.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

TARGET_P95_MS = 50.0
TARGET_RECALL = 0.95
BENCH_DB = f"liminal_bench_{os.getpid()}"
CHUNKS_PER_FILE = 100
NOISE_TENANT_SHARE = 0.1  # a tenth of the corpus belongs to another user, who is never searched


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000, help="size of the generated corpus")
    parser.add_argument("--queries", type=int, default=300, help="timed queries per scenario")
    parser.add_argument("--recall-queries", type=int, default=200, help="queries for recall@10")
    parser.add_argument("--real-chunks", type=int, default=300, help="chunks of real files to ingest for throughput")
    parser.add_argument("--anchors", type=int, default=1500, help="real sentences embedded as vector anchors")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep-database", action="store_true", help="leave the bench database in place for investigation"
    )
    return parser.parse_args()


# ---------------------------------------------------------------- database lifecycle


SERVER_URL: str | None = None


def _server_connection_kwargs() -> dict:
    from liminal import infra

    if SERVER_URL:
        return {"conninfo": SERVER_URL}
    embedded = infra.ensure_postgres()
    return {"host": embedded["host"], "user": embedded["user"], "dbname": "postgres"}


def _admin_execute(sql: str) -> None:
    import psycopg

    kwargs = _server_connection_kwargs()
    conninfo = kwargs.pop("conninfo", "")
    if conninfo:
        from urllib.parse import urlsplit, urlunsplit

        conninfo = urlunsplit(urlsplit(conninfo)._replace(path="/postgres"))
    with psycopg.connect(conninfo, autocommit=True, **kwargs) as conn:
        conn.execute(sql)


def point_settings_at_the_bench_database() -> str | None:
    """Must run before anything imports `liminal` (its package imports the settings)."""
    server_url = os.environ.get("DATABASE_URL")
    os.environ["LIMINAL_DB_NAME"] = BENCH_DB
    if server_url:
        from urllib.parse import urlsplit, urlunsplit

        os.environ["DATABASE_URL"] = urlunsplit(urlsplit(server_url)._replace(path=f"/{BENCH_DB}"))
    return server_url


def create_database() -> None:
    _admin_execute(f'CREATE DATABASE "{BENCH_DB}"')


def drop_database() -> None:
    try:
        from django.db import connections

        connections.close_all()
    except Exception:
        pass
    _admin_execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


# ---------------------------------------------------------------- helpers


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 74 - len(title)))


def real_documents(limit_bytes: int = 4_000_000) -> list[Path]:
    """Documentation files shipped in the virtual environment: real prose, code and lists."""
    site_packages = Path(sys.prefix) / "lib"
    found = []
    for pattern in ("*.md", "*.rst", "*.txt"):
        for path in site_packages.rglob(pattern):
            if not path.is_file() or "vocab" in path.name.lower() or "RECORD" in path.name:
                continue
            size = path.stat().st_size
            if 2_000 <= size <= 200_000:
                found.append(path)
    found.sort(key=lambda path: (path.suffix, str(path)))
    total, chosen = 0, []
    for path in found:
        total += path.stat().st_size
        if total > limit_bytes:
            break
        chosen.append(path)
    return chosen


# ---------------------------------------------------------------- phases


def measure_ingestion(user, target_chunks: int, rng) -> dict:
    """Real files through the real pipeline: upload, extract, chunk, embed, store."""
    from apps.knowledge import services
    from apps.knowledge.embedding import current_encoder
    from apps.knowledge.models import Chunk, KnowledgeFile
    from workers.ingest import IngestError, chunk_document, extract_document

    encoder = current_encoder()
    candidates = real_documents()
    rng.shuffle(candidates)
    planned, planned_chunks = [], 0
    for path in candidates:
        if planned_chunks >= target_chunks:
            break
        data = path.read_bytes()
        name = f"{path.parent.name}-{path.name}"
        try:
            document = extract_document(name, data)
        except IngestError:
            continue
        count = len(chunk_document(document, encoder.count_tokens, max_tokens=encoder.max_text_tokens))
        if count == 0 or count > max(40, target_chunks // 3):
            continue
        planned.append((name, data))
        planned_chunks += count

    encoder.encode(["warm up the encoder's compiled shapes"] * 8)
    files = []
    started = time.perf_counter()
    for name, data in planned:
        try:
            files.append(services.file_upload(actor=user, name=name, content=data))
        except Exception as exc:  # a duplicate licence text, say: skip it, it is not the point here
            print(f"  skipped {name}: {exc}")
    uploaded = time.perf_counter()
    for file in files:
        services.file_ingest(file_id=file.pk)
    finished = time.perf_counter()

    ready = KnowledgeFile.objects.filter(owner=user, status=KnowledgeFile.Status.READY).count()
    chunks = Chunk.objects.filter(owner=user).count()
    tokens = sum(Chunk.objects.filter(owner=user).values_list("token_count", flat=True))

    texts = list(Chunk.objects.filter(owner=user).order_by("?").values_list("text", flat=True)[:64])
    embed_started = time.perf_counter()
    encoder.encode(texts)
    embed_seconds = time.perf_counter() - embed_started
    return {
        "files": len(files),
        "ready": ready,
        "chunks": chunks,
        "tokens": tokens,
        "upload_s": uploaded - started,
        "ingest_s": finished - uploaded,
        "chunks_per_s": chunks / max(finished - uploaded, 1e-9),
        "embed_only_chunks_per_s": len(texts) / max(embed_seconds, 1e-9),
        "encoder": encoder.encoder_id,
    }


def real_sentences(limit: int, rng) -> list[str]:
    from apps.knowledge.models import Chunk

    sentences = set()
    for text in Chunk.objects.values_list("text", flat=True):
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            words = sentence.split()
            if 6 <= len(words) <= 40 and sum(word.isalpha() for word in words) >= 0.6 * len(words):
                sentences.add(sentence)
    for path in real_documents():
        if len(sentences) >= 4 * limit:
            break
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(path.read_text(errors="ignore").split())):
            words = sentence.split()
            if 6 <= len(words) <= 40 and sum(word.isalpha() for word in words) >= 0.6 * len(words):
                sentences.add(sentence)
    ordered = sorted(sentences)
    rng.shuffle(ordered)
    return ordered[:limit]


def _mixture(np, rng, anchors, count: int):
    """Unit vectors near the real anchors: a main anchor, a weaker second one, Gaussian noise."""
    dim = anchors.shape[1]
    main = rng.integers(0, len(anchors), count)
    second = rng.integers(0, len(anchors), count)
    weight = rng.uniform(0.15, 0.45, (count, 1)).astype(np.float32)
    noise = rng.standard_normal((count, dim)).astype(np.float32) * (0.55 / np.sqrt(dim))
    vectors = anchors[main] + weight * anchors[second] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, main, second


def build_corpus(np, rng, total: int, anchors, sentences, encoder_id: str, searcher, tenant) -> dict:
    """Generated chunks loaded with COPY, then the HNSW and GIN indexes built over them."""
    from django.db import connection

    from apps.knowledge.models import KnowledgeFile

    files_by_owner = {}
    plan = [(searcher, total - int(total * NOISE_TENANT_SHARE)), (tenant, int(total * NOISE_TENANT_SHARE))]
    for owner, count in plan:
        file_count = (count + CHUNKS_PER_FILE - 1) // CHUNKS_PER_FILE
        files = [
            KnowledgeFile(
                owner=owner,
                name=f"generated-{owner.pk.hex[:6]}-{index:05d}.txt",
                storage_path=f"users/{owner.pk}/files/generated-{index:05d}.txt",
                kind="text",
                size_bytes=0,
                sha256=uuid.uuid4().hex + uuid.uuid4().hex,
                status=KnowledgeFile.Status.READY,
                phase=KnowledgeFile.Phase.DONE,
                chunks_total=CHUNKS_PER_FILE,
                chunks_done=CHUNKS_PER_FILE,
                encoder_id=encoder_id,
            )
            for index in range(file_count)
        ]
        KnowledgeFile.objects.bulk_create(files, batch_size=2000)
        files_by_owner[owner.pk] = (files, count)

    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS knowledge_chunk_embedding_hnsw")
        cursor.execute("DROP INDEX IF EXISTS knowledge_chunk_search_gin")

    started = time.perf_counter()
    columns = (
        "owner_id, file_id, ordinal, text, heading, token_count, char_start, char_end, location, "
        "content_sha256, embedding, encoder_id, embedding_dim, created_at"
    )
    connection.ensure_connection()
    raw = connection.connection  # the psycopg connection under Django's wrapper, in autocommit
    for owner_id, (files, count) in files_by_owner.items():
        vectors, main, second = _mixture(np, rng, anchors, count)
        buffer = io.StringIO()
        for index in range(count):
            file = files[index // CHUNKS_PER_FILE]
            picks = [main[index], second[index], *rng.integers(0, len(sentences), 4)]
            text = " ".join(sentences[pick] for pick in picks)
            vector = "[" + ",".join(f"{value:.6f}" for value in vectors[index]) + "]"
            row = [
                str(owner_id),
                str(file.pk),
                str(index % CHUNKS_PER_FILE),
                text,
                "",
                str(len(text.split())),
                "0",
                str(len(text)),
                f"line {index % CHUNKS_PER_FILE + 1}",
                uuid.uuid4().hex * 2,
                vector,
                encoder_id,
                str(vectors.shape[1]),
                "2026-01-01T00:00:00Z",
            ]
            buffer.write("\t".join(field.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ") for field in row))
            buffer.write("\n")
        with raw.cursor() as cursor, cursor.copy(f"COPY knowledge_chunk ({columns}) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
    loaded = time.perf_counter()

    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 2")
        cursor.execute(
            "CREATE INDEX knowledge_chunk_embedding_hnsw ON knowledge_chunk "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        hnsw_built = time.perf_counter()
        cursor.execute("CREATE INDEX knowledge_chunk_search_gin ON knowledge_chunk USING gin (search_vector)")
        gin_built = time.perf_counter()
        cursor.execute("VACUUM ANALYZE knowledge_chunk")
        cursor.execute("VACUUM ANALYZE knowledge_knowledgefile")
    return {
        "load_s": loaded - started,
        "hnsw_s": hnsw_built - loaded,
        "gin_s": gin_built - hnsw_built,
        "searcher_files": files_by_owner[searcher.pk][0],
        "searcher_chunks": files_by_owner[searcher.pk][1],
    }


def make_queries(np, rng, anchors, sentences, count: int) -> list[tuple[str, list[float]]]:
    vectors, main, _ = _mixture(np, rng, anchors, count)
    queries = []
    for index in range(count):
        words = re.findall(r"[A-Za-z]{3,}", sentences[main[index]])
        picked = rng.choice(words, size=min(len(words), int(rng.integers(3, 7))), replace=False) if words else []
        queries.append((" ".join(picked), vectors[index].tolist()))
    return queries


class CpuClock:
    """On-CPU and run-queue time of this process and of its PostgreSQL backend (Linux schedstat).

    Wall time on a busy machine includes waiting for a CPU; on-CPU time is the work a query
    really costs, i.e. roughly its latency on an otherwise idle machine.
    """

    def __init__(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.path = Path(f"/proc/{cursor.fetchone()[0]}/schedstat")
        self.available = self.path.exists()  # a local server only

    def read(self) -> tuple[float, float]:
        """(on-CPU ms, waiting-for-a-CPU ms), both processes together."""
        own_cpu = time.thread_time() * 1000
        if not self.available:
            return own_cpu, 0.0
        cpu_ns, wait_ns, _ = (int(value) for value in self.path.read_text().split())
        return own_cpu + cpu_ns / 1e6, wait_ns / 1e6


def time_hybrid(user, file_ids, queries, encoder_id) -> dict:
    from apps.knowledge.models import RetrievalConfig
    from apps.knowledge.selectors import hybrid_search

    config = RetrievalConfig.current()
    for text, vector in queries[:20]:
        hybrid_search(
            actor=user, file_ids=file_ids, query=text, query_vector=vector, encoder_id=encoder_id, config=config
        )
    clock = CpuClock()
    timings, on_cpu, waiting, short = [], [], [], 0
    for text, vector in queries:
        cpu_before, wait_before = clock.read()
        started = time.perf_counter()
        rows = hybrid_search(
            actor=user, file_ids=file_ids, query=text, query_vector=vector, encoder_id=encoder_id, config=config
        )
        timings.append(1000 * (time.perf_counter() - started))
        cpu_after, wait_after = clock.read()
        on_cpu.append(cpu_after - cpu_before)
        waiting.append(wait_after - wait_before)
        vector_rows = sum(1 for row in rows if row.vector_rank is not None)
        short += vector_rows < min(config.candidates, 10)
    return {
        "p50": percentile(timings, 0.50),
        "p95": percentile(timings, 0.95),
        "mean": statistics.fmean(timings),
        "cpu_p50": percentile(on_cpu, 0.50),
        "cpu_p95": percentile(on_cpu, 0.95),
        "wait_p95": percentile(waiting, 0.95),
        "clock": clock.available,
        "short": short,
        "n": len(timings),
    }


_VECTOR_TOP10 = """
SELECT id FROM knowledge_chunk
WHERE owner_id = %s AND encoder_id = %s AND file_id = ANY(%s)
ORDER BY embedding <=> %s::vector
LIMIT 10
"""


def _vector_top10(user, file_ids, vector, encoder_id, *, exact: bool, ef_search: int) -> list[int]:
    from django.db import connection, transaction

    from apps.knowledge.selectors import _vector_literal

    with transaction.atomic(), connection.cursor() as cursor:
        if exact:
            cursor.execute("SELECT set_config('enable_indexscan', 'off', true)")
        else:
            cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
        cursor.execute(_VECTOR_TOP10, [user.pk, encoder_id, list(file_ids), _vector_literal(vector)])
        return [row[0] for row in cursor.fetchall()]


def measure_recall(user, file_ids, queries, encoder_id) -> dict:
    from apps.knowledge.models import RetrievalConfig

    ef_search = max(RetrievalConfig.current().ef_search, RetrievalConfig.current().candidates)
    recalls, short = [], 0
    for _, vector in queries:
        approximate = _vector_top10(user, file_ids, vector, encoder_id, exact=False, ef_search=ef_search)
        exact = _vector_top10(user, file_ids, vector, encoder_id, exact=True, ef_search=ef_search)
        short += len(approximate) < len(exact)
        recalls.append(len(set(approximate) & set(exact)) / max(1, len(exact)))
    return {"recall": statistics.fmean(recalls), "worst": min(recalls), "short": short, "n": len(recalls)}


def plan_uses_hnsw(user, file_ids, vector, encoder_id) -> str:
    from django.db import connection, transaction

    from apps.knowledge.selectors import _vector_literal

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        cursor.execute("EXPLAIN " + _VECTOR_TOP10, [user.pk, encoder_id, list(file_ids), _vector_literal(vector)])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    if "knowledge_chunk_embedding_hnsw" in plan:
        return "HNSW index scan (iterative, relaxed order)"
    return "no HNSW: " + plan.splitlines()[0].strip()


def measure_end_to_end(user, context_ids, questions) -> dict:
    from apps.knowledge.selectors import retrieve

    for question in questions:  # the encoder compiles once per query-length bucket; keep that out
        retrieve(actor=user, context_ids=context_ids, query=question)
    timings, embed = [], []
    for question in questions:
        started = time.perf_counter()
        result = retrieve(actor=user, context_ids=context_ids, query=question)
        timings.append(1000 * (time.perf_counter() - started))
        embed.append(result.timings_ms.get("embed", 0.0))
    return {"p50": percentile(timings, 0.5), "p95": percentile(timings, 0.95), "embed_p50": percentile(embed, 0.5)}


# ---------------------------------------------------------------- main


def main() -> int:
    global SERVER_URL
    args = parse_args()
    if "liminal" in sys.modules:
        raise RuntimeError("the settings were imported before the bench database was chosen")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liminal.settings")
    os.environ.setdefault("DEBUG", "1")
    shared_root = Path(tempfile.mkdtemp(prefix="liminal-bench-shared-"))
    os.environ["SHARED_FS_ROOT"] = str(shared_root)
    SERVER_URL = point_settings_at_the_bench_database()
    create_database()
    try:
        return run(args)
    finally:
        shutil.rmtree(shared_root, ignore_errors=True)
        if args.keep_database:
            print(f'\nKept database {BENCH_DB} (drop it with: DROP DATABASE "{BENCH_DB}"); removed {shared_root}.')
        else:
            drop_database()
            print(f"\nCleaned up: dropped database {BENCH_DB}, removed {shared_root}.")


def run(args) -> int:
    import django

    django.setup()
    from django.db import connection

    if connection.settings_dict["NAME"] != BENCH_DB:  # never load benchmark rows into a real database
        raise RuntimeError(f"connected to {connection.settings_dict['NAME']!r}, not {BENCH_DB!r}; stopping")
    import jax
    import numpy as np
    from django.conf import settings
    from django.core.management import call_command

    from apps.accounts.services import user_create
    from apps.knowledge.embedding import current_encoder
    from apps.knowledge.services import context_create

    settings.DEBUG = False  # no per-query bookkeeping in the timed loops
    rng = np.random.default_rng(args.seed)
    print(
        f"Liminal retrieval benchmark · database {BENCH_DB} · JAX on {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPU cores"
    )
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version(), (SELECT extversion FROM pg_extension WHERE extname = 'vector')")
        version, pgvector = cursor.fetchone()
    print(f"{version.split(' on ')[0]}, pgvector {pgvector}")

    searcher = user_create(email="bench-searcher@example.com", password=None)
    tenant = user_create(email="bench-tenant@example.com", password=None)
    reader = user_create(email="bench-reader@example.com", password=None)

    section("Ingestion throughput (real files, real encoder, full pipeline)")
    ingestion = measure_ingestion(reader, args.real_chunks, rng)
    print(
        f"  {ingestion['files']} files ({ingestion['ready']} ready), {ingestion['chunks']} chunks, "
        f"{ingestion['tokens']} tokens, encoder {ingestion['encoder']}"
    )
    print(f"  upload (sniff, hash, write)    {ingestion['upload_s']:.2f} s")
    print(
        f"  ingest (extract→chunk→embed→store) {ingestion['ingest_s']:.1f} s = {ingestion['chunks_per_s']:.1f} chunks/s"
    )
    print(f"  encoder alone, batches of 64   {ingestion['embed_only_chunks_per_s']:.1f} chunks/s")
    hours = args.chunks / max(ingestion["chunks_per_s"], 1e-9) / 3600
    print(
        f"  → embedding {args.chunks:,} such chunks here would take ≈ {hours:.1f} h; "
        "the large corpus below uses generated vectors."
    )

    reader_context = context_create(
        actor=reader, name="Real documents", file_ids=reader.knowledge_files.values_list("pk", flat=True)
    )

    section(f"Generated corpus of {args.chunks:,} chunks")
    encoder = current_encoder()
    sentences = real_sentences(args.anchors, rng)
    started = time.perf_counter()
    anchors = encoder.encode(sentences)
    print(f"  {len(sentences)} real sentences embedded as anchors in {time.perf_counter() - started:.1f} s")
    print(
        "  NOTE: chunk vectors are generated (noisy mixtures of real sentence vectors, see the module"
        " docstring);\n        texts are stitched from real sentences; latency and recall are measured on these."
    )
    corpus = build_corpus(np, rng, args.chunks, anchors, sentences, encoder.encoder_id, searcher, tenant)
    print(
        f"  COPY load {corpus['load_s']:.1f} s ({args.chunks / corpus['load_s']:.0f} rows/s incl. tsvector), "
        f"HNSW build {corpus['hnsw_s']:.1f} s, GIN build {corpus['gin_s']:.1f} s"
    )
    print(
        f"  searcher owns {corpus['searcher_chunks']:,} chunks in {len(corpus['searcher_files'])} files; "
        f"another tenant owns the rest"
    )

    all_files = [file.pk for file in corpus["searcher_files"]]
    tenth = all_files[: max(1, len(all_files) // 10)]
    scenarios = [
        ("whole library (all of the user's files)", all_files),
        ("one context with 10% of the files", tenth),
    ]
    queries = make_queries(np, rng, anchors, sentences, max(args.queries, args.recall_queries) + 20)

    section("Hybrid query latency (vector top-40 + full-text top-40, RRF k=60, one SQL round trip)")
    print(
        "  load average before: {:.2f} {:.2f} {:.2f} (other work on this machine inflates the tail)".format(
            *os.getloadavg()
        )
    )
    results = {}
    for label, file_ids in scenarios:
        timing = time_hybrid(searcher, file_ids, queries[: args.queries], encoder.encoder_id)
        plan = plan_uses_hnsw(searcher, file_ids, queries[0][1], encoder.encoder_id)
        results[label] = timing
        print(
            f"  {label}: p50 {timing['p50']:.1f} ms, p95 {timing['p95']:.1f} ms, mean {timing['mean']:.1f} ms "
            f"over {timing['n']} queries; vector side short of 10 rows: {timing['short']}"
        )
        if timing["clock"]:
            print(
                f"    on-CPU (PostgreSQL backend + this process): p50 {timing['cpu_p50']:.1f} ms, "
                f"p95 {timing['cpu_p95']:.1f} ms; waiting for a CPU: p95 {timing['wait_p95']:.1f} ms"
            )
        print(f"    plan: {plan}")

    print("  load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    section("Recall@10 of the HNSW search against exact search (same filters)")
    recalls = {}
    for label, file_ids in scenarios:
        recall = measure_recall(searcher, file_ids, queries[: args.recall_queries], encoder.encoder_id)
        recalls[label] = recall
        print(
            f"  {label}: recall@10 {recall['recall']:.4f} (worst query {recall['worst']:.2f}) over "
            f"{recall['n']} queries; HNSW returned fewer rows than exact: {recall['short']}"
        )

    section("End to end on the real documents (query embedding + hybrid SQL)")
    questions = [" ".join(sentence.split()[:10]) for sentence in sentences[:40]]
    end_to_end = measure_end_to_end(reader, [reader_context.pk], questions)
    print(
        f"  retrieve(): p50 {end_to_end['p50']:.1f} ms, p95 {end_to_end['p95']:.1f} ms "
        f"(query embedding p50 {end_to_end['embed_p50']:.1f} ms; after one warm-up pass, since the encoder\n"
        "  compiles once per process for each query-length bucket, ~0.3 s the first time)"
    )

    section("Against the targets")
    worst_p95 = max(timing["p95"] for timing in results.values())
    worst_cpu_p95 = max(timing["cpu_p95"] for timing in results.values())
    worst_recall = min(recall["recall"] for recall in recalls.values())
    corpus_label = f"generated {args.chunks // 1000}k corpus"
    print(
        f"  hybrid p95 (worst scenario, {corpus_label})  {worst_p95:7.1f} ms   target < {TARGET_P95_MS:.0f} ms"
        f"   {verdict(worst_p95 < TARGET_P95_MS)}"
    )
    if any(timing["clock"] for timing in results.values()):
        print(
            f"  hybrid on-CPU p95 (same queries; wall time minus CPU contention) {worst_cpu_p95:5.1f} ms"
            f"   target < {TARGET_P95_MS:.0f} ms   {verdict(worst_cpu_p95 < TARGET_P95_MS)}"
        )
        if worst_p95 >= TARGET_P95_MS > worst_cpu_p95:
            print("    (wall-clock p95 misses only because other processes held the CPUs; see the load average)")
    print(
        f"  recall@10 (worst scenario, {corpus_label})   {worst_recall:7.4f}      target ≥ {TARGET_RECALL}"
        f"     {verdict(worst_recall >= TARGET_RECALL)}"
    )
    print(
        f"  ingestion throughput (real files, real encoder)      {ingestion['chunks_per_s']:7.1f} chunks/s "
        f"(no target; JAX on {jax.devices()[0].platform})"
    )
    return 0 if worst_p95 < TARGET_P95_MS and worst_recall >= TARGET_RECALL else 1


if __name__ == "__main__":
    sys.exit(main())
