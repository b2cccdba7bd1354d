import pytest

from workers.llm.tokenizer import DEFAULT_CHAT_TEMPLATE, ChatTemplate, IncrementalDecoder

TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days.",
    "Emoji: 😀🎉 and café naïve",
    "def add(a, b):\n    return a + b  # sum\n\n\tx = [1, 22, 333]",
    "<|im_start|>user\nHi<|im_end|>\n",
    "  leading spaces and trailing   ",
    "日本語のテキスト",
    "I'm sure they'll've done it",
]

# Token ids llama.cpp (llama-cpp-python 0.3.36, special=True) gives on the SmolLM2 GGUF.
LLAMA_CPP_IDS = {
    "Hello, world!": [19556, 28, 905, 17],
    "The year 2024 had 366 days.": [504, 713, 216, 34, 32, 34, 36, 761, 216, 35, 38, 38, 2009, 30],
    "Emoji: 😀🎉 and café naïve": [10809, 33777, 42, 40303, 218, 10813, 232, 227, 284, 37366, 15486, 46494],
    "def add(a, b):\n    return a + b  # sum\n\n\tx = [1, 22, 333]": [
        1604,
        803,
        24,
        81,
        28,
        278,
        727,
        472,
        1003,
        253,
        1232,
        278,
        216,
        907,
        2028,
        1116,
        197,
        104,
        446,
        933,
        33,
        28,
        216,
        34,
        34,
        28,
        216,
        35,
        35,
        35,
        77,
    ],
    "<|im_start|>user\nHi<|im_end|>\n": [1, 4093, 198, 26843, 2, 198],
    "  leading spaces and trailing   ": [216, 2899, 5600, 284, 35079, 333],
    "日本語のテキスト": [23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226],
    "I'm sure they'll've done it": [57, 5248, 2090, 502, 3060, 3543, 2294, 357],
}


def test_incremental_decoder_never_splits_characters(tiny_model):
    tokenizer = tiny_model.tokenizer
    text = "héllo 😀 wörld ✓"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text.encode())  # one token per byte: characters span tokens
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(token) for token in ids]
    assert "".join(deltas) + decoder.flush() == text
    assert all("\ufffd" not in delta for delta in deltas)
    assert "" in deltas  # some tokens ended mid-character and were held back


def test_incomplete_character_is_flushed_as_replacement(tiny_model):
    decoder = IncrementalDecoder(tiny_model.tokenizer)
    ids = tiny_model.tokenizer.encode("a😀")
    deltas = [decoder.push(token) for token in ids[:-1]]
    assert "".join(deltas) == "a"
    assert decoder.flush() == "\ufffd"


def test_chat_template_renders_like_hugging_face():
    template = ChatTemplate(DEFAULT_CHAT_TEMPLATE)
    text = template.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert not template.render([{"role": "user", "content": "Hi"}], add_generation_prompt=False).endswith("assistant\n")
    with pytest.raises(ValueError):
        template.render([{"content": "no role"}])


def test_template_errors_are_value_errors():
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ValueError, match="roles must alternate"):
        template.render([{"role": "user", "content": "x"}])


@pytest.mark.slow
def test_smollm_tokenizer_matches_llama_cpp_and_round_trips(smollm_model):
    tokenizer = smollm_model.tokenizer
    for text, expected in LLAMA_CPP_IDS.items():
        assert tokenizer.encode(text) == expected
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.encode("12345") == [33, 34, 35, 36, 37]  # digits are split one by one
    assert tokenizer.stop_token_ids >= {2}
    assert tokenizer.vocab_size == smollm_model.config.vocab_size
