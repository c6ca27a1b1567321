"""The bytes each token of a vocabulary stands for: what logprobs report and what a grammar matches against.

Byte-level BPE vocabularies (GPT-2's scheme, SmolLM2's) spell every byte as a printable character (a space
is "Ġ"); the bytes are recovered by inverting that table. Special tokens stand for their own text. A
vocabulary of another kind falls back to decoding the token alone, which is right for whole characters.
"""

from __future__ import annotations

from functools import cache


@cache
def _byte_decoder() -> dict[str, int]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars)}


def vocabulary_bytes(tokenizer, size: int) -> list[bytes]:
    """The bytes of token ids 0..size-1 of a Hugging Face tokenizer (b"" past its vocabulary)."""
    decoder = _byte_decoder()
    special = set(tokenizer.all_special_ids)
    names = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    result: list[bytes] = []
    for token_id, name in enumerate(names):
        if name is None:
            result.append(b"")
        elif token_id in special or any(char not in decoder for char in name):
            result.append(tokenizer.decode([token_id]).encode("utf-8"))
        else:
            result.append(bytes(decoder[char] for char in name))
    result.extend(b"" for _ in range(size - len(result)))
    return result
