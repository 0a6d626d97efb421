#!/usr/bin/env python3
"""Converts a Llama-architecture GGUF file (llama.cpp's format, any of its quantizations) into a
Hugging Face model directory that tpx-run (and transformers) read:

  config.json              LlamaConfig's keys, from the GGUF metadata (llama.*)
  model.safetensors        every tensor dequantized and stored as bf16, under transformers'
                           names; attn_q / attn_k get back the row order llama.cpp's converter
                           permuted for its RoPE layout
  tokenizer.json           the GGUF's vocabulary, merges and token types as a byte-level BPE
                           (tokenizer.ggml.model "gpt2"), written with the `tokenizers` package
  tokenizer_config.json    the special tokens and the chat template
  generation_config.json   BOS and EOS ids

Needs `gguf` (numpy only) and `tokenizers`; tools/real-model makes a virtual environment with
them. Usage: gguf_to_hf.py MODEL.gguf OUT_DIR (OUT_DIR is written whole or not at all: the files
go to OUT_DIR.partial, which is renamed at the end).
"""

import json
import os
import shutil
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def bf16_bytes(a):
    """float32 → bfloat16 (round to nearest even), as raw little-endian bytes."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = u + (0x7FFF + ((u >> 16) & 1))
    nan = np.isnan(a.reshape(-1)).reshape(u.shape)
    out = np.where(nan, (u >> 16) | 0x40, rounded >> 16).astype(np.uint16)
    return out.astype("<u2").tobytes()


def write_safetensors(path, tensors):
    """tensors: [(name, shape, bf16 bytes)] → a safetensors file (header JSON, then the data)."""
    header, offset = {}, 0
    for name, shape, data in tensors:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, _, data in tensors:
            f.write(data)


def unpermute(w, heads):
    """Undoes llama.cpp's q/k row permutation (its convert script's `permute`)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
BLOCK = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name):
    if name in NAMES:
        return NAMES[name]
    parts = name.split(".")  # blk.N.kind.weight
    if parts[0] == "blk" and parts[2] in BLOCK:
        return f"model.layers.{parts[1]}.{BLOCK[parts[2]]}.{parts[3]}"
    sys.exit(f"gguf_to_hf: tensor '{name}' has no Hugging Face name here (a Llama GGUF's tensors: "
             f"token_embd, output_norm, output, blk.N.{{{', '.join(BLOCK)}}})")


def tokenizer_json(reader):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    kind = field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        sys.exit(f"gguf_to_hf: tokenizer.ggml.model is '{kind}'; this converter writes byte-level "
                 "BPE tokenizers (gpt2) only")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    t = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(tokens)}, merges=merges,
                             fuse_unk=False, byte_fallback=False, continuing_subword_prefix="",
                             end_of_word_suffix=""))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    t.decoder = decoders.ByteLevel()
    # Control tokens (type 3) are special; user-defined ones (type 4) added but not special.
    specials = [AddedToken(tokens[i], special=True, normalized=False)
                for i in range(len(tokens)) if types[i] == 3]
    t.add_special_tokens(specials)
    t.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                  for i in range(len(tokens)) if types[i] == 4])
    bos = field(reader, "tokenizer.ggml.bos_token_id")
    if field(reader, "tokenizer.ggml.add_bos_token", False) and bos is not None:
        t.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A {tokens[bos]} $B",
            special_tokens=[(tokens[bos], bos)])
    else:
        t.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1",
                                                         special_tokens=[])
    return t, tokens


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gguf_to_hf.py MODEL.gguf OUT_DIR")
    src, out = sys.argv[1], sys.argv[2]
    reader = GGUFReader(src)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"gguf_to_hf: {src}: general.architecture is '{arch}'; this converter writes Llama "
                 "models")
    heads = int(field(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv", heads))
    hidden = int(field(reader, "llama.embedding_length"))
    tensors, names = [], set()
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]  # GGUF lists dims innermost first
        w = w.reshape(shape)
        kind = t.name.split(".")[2] if t.name.startswith("blk.") else ""
        if kind == "attn_q":
            w = unpermute(w, heads)
        elif kind == "attn_k":
            w = unpermute(w, kv_heads)
        name = hf_name(t.name)
        names.add(name)
        tensors.append((name, shape, bf16_bytes(w)))
    tensors.sort(key=lambda x: x[0])
    tok, tokens = tokenizer_json(reader)
    bos = field(reader, "tokenizer.ggml.bos_token_id")
    eos = field(reader, "tokenizer.ggml.eos_token_id")
    head_dim = int(field(reader, "llama.rope.dimension_count", hidden // heads))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": len(tokens),
        "rms_norm_eps": float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "tie_word_embeddings": "lm_head.weight" not in names,
        "hidden_act": "silu",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "bfloat16",
    }
    partial = out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    json.dump(config, open(os.path.join(partial, "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(partial, "model.safetensors"), tensors)
    tok.save(os.path.join(partial, "tokenizer.json"))
    name = lambda i: None if i is None else tokens[i]  # noqa: E731
    json.dump({"bos_token": name(bos), "eos_token": name(eos),
               "pad_token": name(field(reader, "tokenizer.ggml.padding_token_id")),
               "unk_token": name(field(reader, "tokenizer.ggml.unknown_token_id")),
               "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
               "chat_template": field(reader, "tokenizer.chat_template"),
               "model_max_length": config["max_position_embeddings"],
               "tokenizer_class": "PreTrainedTokenizerFast"},
              open(os.path.join(partial, "tokenizer_config.json"), "w"), indent=2)
    json.dump({"bos_token_id": bos, "eos_token_id": eos},
              open(os.path.join(partial, "generation_config.json"), "w"), indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(partial, out)
    print(f"gguf_to_hf: {out}: {len(tensors)} tensors, {len(tokens)} tokens")


main()
