"""The inference engine of this worker process: loaded once, on first use, never at import."""

import logging
import threading

from django.conf import settings

logger = logging.getLogger(__name__)

_engine = None
_lock = threading.Lock()


def get_engine():
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                from workers.llm import load_engine

                logger.info("Loading inference engine from %s", settings.MODEL_PATH or "the embedded SmolLM2 GGUF")
                _engine = load_engine(
                    settings.MODEL_PATH or None,
                    max_batch_slots=settings.ENGINE_BATCH_SLOTS,
                    max_seq_len=settings.ENGINE_MAX_SEQ_LEN,
                )
                _engine.start()
    return _engine


def loaded_engine():
    """The engine if this process has loaded one (for health reporting), else None."""
    return _engine
