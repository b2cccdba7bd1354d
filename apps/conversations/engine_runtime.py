"""The inference engine of this worker process: loaded once, on first use, never at import."""

import logging
import os
import socket
import threading
import time

from django.conf import settings

from liminal import health

logger = logging.getLogger(__name__)

_engine = None
_lock = threading.Lock()


def _enable_compile_cache() -> None:
    import jax

    if settings.ENGINE_COMPILE_CACHE_DIR:
        jax.config.update("jax_compilation_cache_dir", settings.ENGINE_COMPILE_CACHE_DIR)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def get_engine():
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                from workers.llm import load_engine

                _enable_compile_cache()
                logger.info("Loading inference engine from %s", settings.MODEL_PATH or "the embedded SmolLM2 GGUF")
                engine = load_engine(
                    settings.MODEL_PATH or None,
                    max_batch_slots=settings.ENGINE_BATCH_SLOTS,
                    max_seq_len=settings.ENGINE_MAX_SEQ_LEN,
                    decode_weights=settings.ENGINE_DECODE_WEIGHTS,
                )
                if settings.ENGINE_WARMUP:
                    started = time.perf_counter()
                    engine.warmup(prompt_lengths=settings.ENGINE_WARMUP_PROMPT_LENGTHS, lora_widths=(0,))
                    logger.info(
                        "Engine warmed up: %d programs in %.1f s", engine.compile_count, time.perf_counter() - started
                    )
                engine.start()
                _engine = engine
    return _engine


def warm_up_in_background(queues) -> bool:
    """On an inference worker, load and warm the engine now rather than on the first request."""
    if "inference" not in set(queues):
        return False
    threading.Thread(target=_warm_up_and_announce, name="engine-warmup", daemon=True).start()
    return True


def _warm_up_and_announce() -> None:
    """Load the engine, then tell /readyz so for as long as this process has it."""
    get_engine()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    while loaded_engine() is not None:
        try:
            health.engine_ready_announce(worker=worker, ttl=settings.ENGINE_READY_TTL_S)
        except Exception:  # Redis away for a moment: /readyz says not ready until it is back
            logger.warning("Could not announce the warm engine to /readyz", exc_info=True)
        time.sleep(settings.ENGINE_READY_TTL_S / 3)


def loaded_engine():
    """The engine if this process has loaded one (for health reporting), else None."""
    return _engine
