#!/usr/bin/env python3
"""Writes one decoder layer with Hugging Face tensor names as an F32 safetensors file, using only
the standard library, for `tpx-demo --safetensors`.

Usage: write_layer.py OUT.safetensors llama|mixtral

Llama: hidden 32, 4 heads / 2 KV heads of dim 8, intermediate 40 (model.layers.0.mlp.*).
Mixtral: the same attention, 4 experts of intermediate 24 (model.layers.0.block_sparse_moe.*).
Values are a fixed pseudo-random sequence scaled by 1/sqrt(fan-in); norms are 1 ± 0.1.
"""
import json
import struct
import sys

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, EXPERTS, EXPERT_INTER = 32, 4, 2, 8, 40, 4, 24


def values(n, seed, scale):
    out, s = [], seed
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(((s >> 40) / float(1 << 24) - 0.5) * scale)
    return out


def main():
    path, kind = sys.argv[1], sys.argv[2]
    p = "model.layers.0."
    tensors = [
        (p + "input_layernorm.weight", [HIDDEN], 1.0),
        (p + "self_attn.q_proj.weight", [HEADS * HEAD_DIM, HIDDEN], 0),
        (p + "self_attn.k_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN], 0),
        (p + "self_attn.v_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN], 0),
        (p + "self_attn.o_proj.weight", [HIDDEN, HEADS * HEAD_DIM], 0),
        (p + "post_attention_layernorm.weight", [HIDDEN], 1.0),
    ]
    if kind == "llama":
        tensors += [(p + "mlp.gate_proj.weight", [INTER, HIDDEN], 0),
                    (p + "mlp.up_proj.weight", [INTER, HIDDEN], 0),
                    (p + "mlp.down_proj.weight", [HIDDEN, INTER], 0)]
    else:
        tensors.append((p + "block_sparse_moe.gate.weight", [EXPERTS, HIDDEN], 0))
        for e in range(EXPERTS):
            q = p + "block_sparse_moe.experts.%d." % e
            tensors += [(q + "w1.weight", [EXPERT_INTER, HIDDEN], 0),
                        (q + "w3.weight", [EXPERT_INTER, HIDDEN], 0),
                        (q + "w2.weight", [HIDDEN, EXPERT_INTER], 0)]
    header, blobs, offset = {}, [], 0
    for seed, (name, shape, base) in enumerate(tensors):
        n = 1
        for d in shape:
            n *= d
        if base:  # a norm: 1 ± 0.1
            data = [base + v for v in values(n, seed + 1, 0.2)]
        else:
            data = values(n, seed + 1, 2.0 / shape[-1] ** 0.5)
        blob = struct.pack("<%df" % n, *data)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


if __name__ == "__main__":
    main()
