#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/): small valid inputs of
each kind and a few broken ones, from tpx's own fixtures where they exist. Standard library
only; rerun it to regenerate (the files are committed).

  python3 tests/fuzz/make_seeds.py
"""
import json
import pathlib
import struct

here = pathlib.Path(__file__).resolve().parent
root = here.parent.parent
corpus = here / "corpus"


def put(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None, pad=True):
    header, blobs, offset = {}, [], 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


f32 = struct.pack("<6f", *range(6))
bf16 = bytes([0x80, 0x3F, 0x00, 0x40, 0x40, 0x40, 0x80, 0x40])
put("safetensors", "f32_bf16", safetensors([("a", "F32", [2, 3], f32), ("b", "BF16", [4], bf16)],
                                           {"format": "pt"}))
put("safetensors", "f64_empty_i8", safetensors([("z", "F64", [0, 5], b""), ("i", "I8", [3], b"\x01\x02\x03")]))
put("safetensors", "f16_3d", safetensors([("w", "F16", [2, 2, 2], b"\x00\x3c" * 8)]))
good = safetensors([("a", "F32", [2, 3], f32)])
put("safetensors", "truncated", good[:-5])
put("safetensors", "length_past_end", struct.pack("<Q", 1 << 40) + good[8:])
put("safetensors", "overlap", safetensors([("a", "F32", [2], f32[:8]), ("b", "F32", [2], f32[:8])])
    .replace(b'"data_offsets": [8, 16]', b'"data_offsets": [4, 12]'))
put("safetensors", "not_json", struct.pack("<Q", 4) + b"{[}]")
for p in sorted((root / "tests/model/fixtures/hf-tiny").glob("*/model.safetensors")):
    put("safetensors", "hf_tiny_" + p.parent.name, p.read_bytes())

samples = json.loads((root / "tests/plan/fixtures/hf_plans_sample.json").read_text())
for vocabulary, plans in samples.items():
    if isinstance(plans, dict):
        for model, plan in plans.items():
            put("hf_plan", f"{vocabulary}_{model}", json.dumps(plan))
put("hf_plan", "tp_plan", json.dumps({"tp_plan": {"model.layers.*.mlp.up_proj": "colwise"}}))
put("hf_plan", "unknown_style", '{"layers.*.mlp.up_proj": "colwize"}')
put("hf_plan", "not_string", '{"base_model_tp_plan": {"layers.*.mlp.up_proj": 3}}')
put("hf_plan", "ep", json.dumps({"base_model_ep_plan": {"layers.*.mlp.experts": "ep_dispatch_experts",
                                                         "layers.*.mlp.experts.gate_up_proj": "grouped_gemm",
                                                         "layers.*.mlp.experts.down_proj": "grouped_gemm"}}))

put("deepspeed", "rows_cols", json.dumps({"tensor_parallel": {"autotp_size": 2, "partition_config": {
    "use_default_specs": False, "layer_specs": [
        {"patterns": [".*\\.o_proj\\.weight$", ".*\\.down_proj\\.weight$"], "partition_type": "row"},
        {"patterns": [".*\\.[qkv]_proj\\.weight$"], "partition_type": "column"},
        {"patterns": [".*\\.gate_up_proj\\.weight$"], "partition_type": "column",
         "shape": [2, -1], "partition_dim": 0}]}}}))
put("deepspeed", "defaults", json.dumps({"tensor_parallel": {"partition_config": {
    "use_default_specs": True, "layer_specs": [{"patterns": [".*o_proj.*"], "partition_type": "row"}]}}}))
put("deepspeed", "bad_regex", '{"tensor_parallel": {"partition_config": {"layer_specs": '
                              '[{"patterns": ["(unclosed"], "partition_type": "row"}]}}}')
put("deepspeed", "nested_quantifier", '{"partition_config": {"layer_specs": '
                                      '[{"patterns": ["(a*)*b"], "partition_type": "row"}]}}')

for p in sorted((root / "tests/plan/cli").glob("*.json")):
    text = p.read_text()
    if '"model_type"' in text:
        put("config", "cli_" + p.stem, text)
for p in sorted((root / "tests/model/fixtures").glob("*/*/config.json")):
    put("config", f"{p.parent.parent.name}_{p.parent.name}", p.read_text())
put("config", "null_head_dim", json.dumps({"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
                                           "num_attention_heads": 4, "head_dim": None, "vocab_size": 32}))
put("config", "deepseek_defaults", json.dumps({"model_type": "deepseek_v3", "hidden_size": 64,
                                               "num_hidden_layers": 2, "num_attention_heads": 4,
                                               "vocab_size": 32, "n_routed_experts": 4}))
# hidden_size 2^62 with head_dim derived: RoPE's table of head_dim / 2 frequencies was allocated
# before any bound (std::length_error, not a sentence; found by tpx-run's hostile-input table).
put("config", "huge_hidden", json.dumps({"model_type": "llama", "hidden_size": 2 ** 62, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "vocab_size": 32}))
# The tokenizer: texts of its corpus (tests/text/fixtures/corpus.json: hex bytes, some invalid
# UTF-8), and small tokenizer.json files of each kind it reads, with a few broken ones.
for k, h in enumerate(json.loads((root / "tests/text/fixtures/corpus.json").read_text())["texts"]):
    put("encode", f"corpus_{k:02d}", bytes.fromhex(h))
put("encode", "specials_and_spaces", "<|im_start|>  x<|im_end|><s> </s>[TOOL]▁▁\t\r\n 0123456789")
letters = ["<unk>"] + [chr(ord("a") + k) for k in range(26)] + ["th", "he", "▁", "Ġ"]
small = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>", "special": True}],
         "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
         "decoder": None,
         "model": {"type": "BPE", "unk_token": "<unk>", "vocab": {t: k for k, t in enumerate(letters)},
                   "merges": [["t", "h"], ["h", "e"]]}}
put("tokenizer_json", "whitespace_bpe", json.dumps(small))
put("tokenizer_json", "bytelevel", json.dumps(dict(small, pre_tokenizer={"type": "ByteLevel"},
                                                   decoder={"type": "ByteLevel"})))
put("tokenizer_json", "metaspace", json.dumps(dict(
    small, normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "},
                                                            "content": "▁"}]},
    pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"},
    post_processor={"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<unk>"}},
                                                            {"Sequence": {"id": "A"}}],
                    "special_tokens": {"<unk>": {"id": "<unk>", "ids": [0]}}},
    decoder={"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                              {"type": "ByteFallback"}, {"type": "Fuse"},
                                              {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})))
put("tokenizer_json", "split_regex", json.dumps(dict(
    small, pre_tokenizer={"type": "Split", "pattern": {"Regex": "\\p{L}+|\\s+(?!\\S)"},
                          "behavior": "MergedWithPrevious", "invert": True})))
put("tokenizer_json", "bad_regex", json.dumps(dict(
    small, pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated"})))
put("tokenizer_json", "dropout_string", json.dumps(dict(small, model=dict(small["model"], dropout="x"))))
put("tokenizer_json", "unk_number", json.dumps(dict(small, model=dict(small["model"], unk_token=5))))
# A sparse id: the tokenizer's table would have had 2^31 entries (found by the fuzzer: out of memory).
put("tokenizer_json", "sparse_id", json.dumps(dict(small, model=dict(small["model"], vocab={"a": 2 ** 31 - 2}))))
put("tokenizer_json", "merge_missing", json.dumps(dict(small, model=dict(small["model"], merges=["q z"]))))
print(f"seeds in {corpus}: " + ", ".join(f"{d.name} {len(list(d.iterdir()))}" for d in sorted(corpus.iterdir())))
