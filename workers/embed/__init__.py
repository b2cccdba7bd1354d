"""JAX sentence encoder (all-MiniLM-L6-v2) shared by knowledge, routing, clustering and memory.

from workers.embed import get_encoder
encoder = get_encoder()
vectors = encoder.encode(["a text", "another"])  # float32 [2, encoder.dim], unit length
encoder.encoder_id                                # store with every vector
"""

from workers.embed.encoder import (
    DEFAULT_MODEL_NAME,
    TextEncoder,
    default_model_path,
    get_encoder,
    load_encoder,
)

__all__ = ["DEFAULT_MODEL_NAME", "TextEncoder", "default_model_path", "get_encoder", "load_encoder"]
