#!/usr/bin/env python3
"""Writes safetensors checkpoints with nothing but the standard library (struct, json), so that
an independent writer checks tpx's reader.

Usage: write_checkpoint.py OUT_DIR

Writes OUT_DIR/py_single.safetensors (one file, every dtype class, a scalar, an empty tensor,
metadata, an unpadded header, tensors stored out of name order) and a two-file set
OUT_DIR/py-model.safetensors.index.json. Element k of the tensor with seed t holds
((k + 7 t) % 251 - 125) / 8 (floats; exact in every float dtype) or (k + 7 t) % 100 - 50
(integers; k % 2 for BOOL and (k + 7 t) % 256 for U8).
"""
import json
import os
import struct
import sys

FORMATS = {"F64": "d", "F32": "f", "F16": "e", "I64": "q", "I32": "i", "I16": "h", "I8": "b",
           "U8": "B", "BOOL": "?"}


def value(dtype, t, k):
    if dtype in ("F64", "F32", "F16", "BF16"):
        return ((k + 7 * t) % 251 - 125) / 8.0
    if dtype == "BOOL":
        return k % 2 == 1
    if dtype == "U8":
        return (k + 7 * t) % 256
    return (k + 7 * t) % 100 - 50


def encode(dtype, values):
    if dtype == "BF16":  # the top half of the f32 bits; the values are exact, so no rounding
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    return struct.pack("<%d%s" % (len(values), FORMATS[dtype]), *values)


def write(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, seed), stored in list order."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, seed in tensors:
        count = 1
        for d in shape:
            count *= d
        blob = encode(dtype, [value(dtype, seed, k) for k in range(count)])
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "py_single.safetensors"), [
        ("w.f32", "F32", [5, 7], 1),
        ("w.f64", "F64", [3, 4], 2),
        ("w.bf16", "BF16", [6, 5], 3),
        ("w.f16", "F16", [4, 4], 4),
        ("ids.i64", "I64", [3], 5),
        ("ids.i32", "I32", [2, 2], 6),
        ("ids.i16", "I16", [5], 7),
        ("ids.i8", "I8", [3], 8),
        ("bytes.u8", "U8", [2, 3], 9),
        ("mask.bool", "BOOL", [4], 10),
        ("scalar", "F32", [], 11),
        ("empty", "F32", [0, 3], 12),
        ("experts", "BF16", [3, 4, 5], 13),
    ], {"format": "pt", "writer": "python stdlib"})
    parts = [
        ("py-model-00001-of-00002.safetensors",
         [("model.embed.weight", "BF16", [10, 6], 21), ("model.q.weight", "BF16", [8, 6], 22)]),
        ("py-model-00002-of-00002.safetensors",
         [("model.o.weight", "F32", [6, 8], 23), ("lm_head.weight", "F16", [10, 6], 24)]),
    ]
    weight_map = {}
    for file, tensors in parts:
        write(os.path.join(out, file), tensors)
        for t in tensors:
            weight_map[t[0]] = file
    with open(os.path.join(out, "py-model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)


if __name__ == "__main__":
    main()
