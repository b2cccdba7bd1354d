import pytest

from workers.llm.tests.conftest import TINY_CONFIG, tiny_loaded_model
from workers.train import TrainingModel

__all__ = ["TINY_CONFIG"]


@pytest.fixture(scope="session")
def tiny_loaded():
    return tiny_loaded_model()


@pytest.fixture(scope="session")
def tiny_training_model(tiny_loaded):
    return TrainingModel(tiny_loaded)


@pytest.fixture(scope="session")
def tiny_engine(tiny_loaded):
    from workers.llm.engine import Engine

    engine = Engine(tiny_loaded, max_batch_slots=2, max_seq_len=256, lora_slots=2, max_lora_rank=8, prefill_chunk=32)
    yield engine
    engine.shutdown()
