"""Tokenizer (HF `tokenizers`), streaming detokenizer and chat template rendering.

The GGUF path rebuilds the byte-level BPE tokenizer from `tokenizer.ggml.*` metadata; the
pre-tokenizer follows llama.cpp's `tokenizer.ggml.pre` names (SmolLM splits digits one by one).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp pre-tokenizer names whose rule is "every digit alone, then the GPT-2 split".
DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
LLAMA3_PRE = {"llama3", "llama-bpe", "llama-v3", "falcon3", "smaug-bpe", "tekken"}
# GGUF token types: 3 = control, 4 = user defined.
SPECIAL_TOKEN_TYPES = {3, 4}
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|endoftext|>")


class Tokenizer:
    """Thin wrapper over an HF `tokenizers.Tokenizer` with the model's special-token ids."""

    def __init__(self, hf: HFTokenizer, *, bos_token_id: int | None, eos_token_id: int | None, add_bos: bool = False):
        self.hf = hf
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.add_bos = add_bos
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        stop = {eos_token_id} if eos_token_id is not None else set()
        for marker in END_OF_TURN_MARKERS:
            token_id = hf.token_to_id(marker)
            if token_id is not None:
                stop.add(token_id)
        self.stop_token_ids = frozenset(stop)

    @property
    def bos_token(self) -> str:
        return self.hf.id_to_token(self.bos_token_id) if self.bos_token_id is not None else ""

    @property
    def eos_token(self) -> str:
        return self.hf.id_to_token(self.eos_token_id) if self.eos_token_id is not None else ""

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids for `text`; special-token strings in the text become their ids."""
        ids = self.hf.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_token_id is not None:
            if not ids or ids[0] != self.bos_token_id:
                ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def to_json(self) -> str:
        return json.dumps(
            {
                "tokenizer": self.hf.to_str(),
                "bos_token_id": self.bos_token_id,
                "eos_token_id": self.eos_token_id,
                "add_bos": self.add_bos,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        data = json.loads(text)
        return cls(
            HFTokenizer.from_str(data["tokenizer"]),
            bos_token_id=data["bos_token_id"],
            eos_token_id=data["eos_token_id"],
            add_bos=data["add_bos"],
        )

    @classmethod
    def from_gguf_metadata(
        cls,
        *,
        model: str,
        pre: str | None,
        tokens: Sequence[str],
        token_types: Sequence[int] | None,
        merges: Sequence[str],
        bos_token_id: int | None,
        eos_token_id: int | None,
        add_bos: bool,
    ) -> Tokenizer:
        if model != "gpt2":
            raise NotImplementedError(
                f"GGUF tokenizer model {model!r} is not supported (byte-level BPE 'gpt2' is); "
                "load the model from a Hugging Face directory with tokenizer.json instead"
            )
        vocab = {token: index for index, token in enumerate(tokens)}
        pairs = [tuple(merge.split(" ", 1)) for merge in merges]
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
        hf.pre_tokenizer = _pre_tokenizer(pre or "default")
        hf.decoder = decoders.ByteLevel()
        if token_types is not None:
            special = [tokens[i] for i, kind in enumerate(token_types) if kind in SPECIAL_TOKEN_TYPES]
            hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
        return cls(hf, bos_token_id=bos_token_id, eos_token_id=eos_token_id, add_bos=add_bos)


def _pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in LLAMA3_PRE:
        split = Regex(LLAMA3_SPLIT)
    else:
        split = Regex(GPT2_SPLIT)
    steps = [pre_tokenizers.Split(split, behavior="isolated"), byte_level]
    if pre in DIGIT_SPLIT_PRE:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    return pre_tokenizers.Sequence(steps)


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas that are safe to concatenate.

    Byte-level BPE tokens may end in the middle of a multi-byte UTF-8 character; such tails
    decode to U+FFFD and are held back until the next token completes them.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix_text = decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = decode(self.ids[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            delta = new_text[len(prefix_text) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]


class ChatTemplate:
    """Renders a Jinja chat template the way Hugging Face `apply_chat_template` does."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = _raise_template_error
        self.source = source
        self.template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, **extra) -> str:
        for message in messages:
            if "role" not in message or "content" not in message:
                raise ValueError("each chat message needs 'role' and 'content'")
        return self.template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            **extra,
        )


def _raise_template_error(message):
    raise ValueError(f"chat template error: {message}")


# Used when the weights carry no template: ChatML, which SmolLM and many others use.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
