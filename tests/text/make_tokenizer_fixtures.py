#!/usr/bin/env python3
"""Writes the tokenizer fixtures under tests/text/fixtures/ that tpx's C++ tokenizer is
checked against: four small BPE tokenizers trained here with Hugging Face `tokenizers`, one of
each kind tpx reads —

  gpt2_bytelevel   ByteLevel pre-tokenizer (GPT-2's regex) and decoder, special tokens
                   (SmolLM2 / GPT-2 style)
  llama3_split     a Split regex (Llama-3's pattern), ByteLevel without its regex, ignore_merges,
                   a BOS template (Llama-3 / Qwen style)
  llama2_sp        SentencePiece-style BPE: Prepend + Replace normalizer, byte fallback, unk,
                   the Replace / ByteFallback / Fuse / Strip decoder, a BOS template (Llama-2)
  metaspace        Metaspace pre-tokenizer and decoder, byte fallback, Digits (Mistral style)

— each as tokenizer.json, and expected.json: for every text of corpus.json (stored as UTF-8
bytes in hex, some of them invalid UTF-8, which the tokenizers see as Python's
`decode("utf-8", "replace")` does), the ids with and without the special tokens the template
adds, and the decoded text with and without the special tokens.

Not run by the tests or CI (they read the committed files). Needs `tokenizers`:
  python3 -m venv /tmp/tk && /tmp/tk/bin/pip install tokenizers==0.23.3
  /tmp/tk/bin/python tests/text/make_tokenizer_fixtures.py tests/text/fixtures
A tokenizer.json from elsewhere (SmolLM2's) gets its expected ids with `--expect TOKENIZER OUT`.
"""

import json
import os
import sys

import tokenizers
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

TRAIN = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!",
    "def tokenize(text: str) -> list[int]:\n    return [ord(c) for c in text]  # 42\n",
    "In 2026, 1234567 tokens cost $3.50 — or 3,50 € in Zürich, Málaga and Kraków.",
    "Naïve café résumé: coöperate, façade, jalapeño. Ελληνικά και русский текст.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Emoji: 😀🚀🎉 and flags 🇫🇷🇯🇵; arrows → ← and math ∑ ∫ √ ≤ ≥.",
    "    indented    with   many   spaces\t\ttabs\n\n\nand newlines\r\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "It's, we're, they've, I'm, you'll, he'd — don't WON'T Can't.",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // dot product",
] * 20

CORPUS = [
    "Hello world",
    " leading space, trailing space ",
    "    four spaces    inside and at the end    ",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines",
    "digits 0 12 345 6789 1234567890 3.14159 1e-12 0x1F",
    "punctuation!?.,;:'\"()[]{}<>/\\|@#$%^&*-_=+~`",
    "def f(x):\n    return x ** 2  # square\n",
    "It's what we're doing; they'll say I'd've known. DON'T",
    "Emoji 😀 🚀🎉 👩‍👩‍👧 🇫🇷 and ✓ ★",
    "日本語のテキストと中文文本和한국어 텍스트",
    "Accents: naïve café résumé Zürich Kraków Ελληνικά русский",
    "Combining: e\u0301 a\u0300 n\u0303 (decomposed)",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "special<|im_end|>inside<|im_start|>words<|endoftext|>",
    "an unseen word: xylophonequizzicalbumblebee",
    "",
    " ",
    "\n",
    "a",
    "▁ already has the metaspace ▁▁ char",
    "<0x41> looks like a byte token",
]
INVALID = [
    b"invalid \xff byte",
    b"truncated \xe6\x97 sequence",
    b"overlong \xc0\xaf and surrogate \xed\xa0\x80 end",
    b"\x80\x80 lone continuation bytes",
    b"ok \xf0\x9f\x98\x80 then cut \xf0\x9f\x98",
]

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
                  r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def gpt2_bytelevel():
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(TRAIN, trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return t


def llama3_split():
    t = Tokenizer(models.BPE(ignore_merges=True))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(TRAIN, trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bos = t.token_to_id("<|begin_of_text|>")
    t.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return t


def with_byte_tokens(t, specials, **bpe):
    """A BPE of `t`'s trained merges whose vocabulary holds the specials, then the 256 byte tokens
    <0x00>…<0xFF> (as SentencePiece models hold them: in the vocabulary, not added tokens), then
    the trained tokens."""
    trained = json.loads(t.to_str())["model"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for tok, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    merges = [tuple(m) for m in trained["merges"]]
    out = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, **bpe))
    out.add_special_tokens(specials)
    return out


def llama2_sp():
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=500, limit_alphabet=60,
                                                     show_progress=False))
    t = with_byte_tokens(t, ["<unk>", "<s>", "</s>"], unk_token="<unk>", fuse_unk=True)
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    t.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", t.token_to_id("<s>"))])
    return t


def metaspace():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True)])
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre
    t.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=450, limit_alphabet=80,
                                                     show_progress=False))
    t = with_byte_tokens(t, ["<s>", "</s>"])
    t.pre_tokenizer = pre
    t.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                   decoders.ByteFallback(), decoders.Fuse()])
    t.add_tokens(["[TOOL]"])  # an added token that is not special
    return t


def texts():
    return [s.encode("utf-8") for s in CORPUS] + INVALID


def expected(t):
    out = []
    for raw in texts():
        text = raw.decode("utf-8", "replace")
        ids = t.encode(text, add_special_tokens=True).ids
        plain = t.encode(text, add_special_tokens=False).ids
        out.append({"ids": ids, "ids_plain": plain,
                    "decoded": t.decode(ids, skip_special_tokens=False),
                    "decoded_skip": t.decode(ids, skip_special_tokens=True)})
    return {"tokenizers": tokenizers.__version__, "cases": out}


def main():
    if sys.argv[1] == "--expect":
        t = Tokenizer.from_file(sys.argv[2])
        json.dump(expected(t), open(sys.argv[3], "w"), ensure_ascii=False, indent=0)
        return
    out = sys.argv[1]
    json.dump({"texts": [raw.hex() for raw in texts()]}, open(os.path.join(out, "corpus.json"), "w"),
              indent=0)
    for name, make in [("gpt2_bytelevel", gpt2_bytelevel), ("llama3_split", llama3_split),
                       ("llama2_sp", llama2_sp), ("metaspace", metaspace)]:
        t = make()
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        t.save(os.path.join(d, "tokenizer.json"))
        json.dump(expected(t), open(os.path.join(d, "expected.json"), "w"), ensure_ascii=False,
                  indent=0)
        print(name, t.get_vocab_size(), "tokens")


main()
