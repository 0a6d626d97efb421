#!/usr/bin/env python3
"""tpx-plan end to end: golden outputs for Llama and Mixtral configs, tensors read from
safetensors headers, and every bad-input case (exit 2, one sentence on stderr, nothing on stdout).

usage: cli_test.py TPX_PLAN CASES_DIR     (TPX_UPDATE_GOLDEN=1 rewrites the goldens)
Standard library only.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

tool, cases_dir = os.path.abspath(sys.argv[1]), sys.argv[2]
update = os.environ.get("TPX_UPDATE_GOLDEN") == "1"
failures = []


def run(args):
    p = subprocess.run([tool] + args, capture_output=True, text=True, cwd=cases_dir, timeout=60)
    return p.returncode, p.stdout, p.stderr


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


# 1. Goldens.
cases = json.load(open(os.path.join(cases_dir, "cases.json")))
for case in cases["golden"]:
    rc, out, err = run(case["args"])
    name = " ".join(case["args"])
    check(rc == 0 and err == "", f"{name}: exit {rc}, stderr {err!r}")
    path = os.path.join(cases_dir, case["golden"])
    if update:
        open(path, "w").write(out)
        continue
    want = open(path).read()
    if path.endswith(".json"):
        check(json.loads(out) == json.loads(want), f"{name}: JSON differs from {case['golden']}")
    else:
        if out != want:
            import difflib
            sys.stdout.writelines(difflib.unified_diff(want.splitlines(True), out.splitlines(True),
                                                       case["golden"], "output"))
        check(out == want, f"{name}: text differs from {case['golden']}")

# 2. The JSON schema the issue fixes, on one golden.
rc, out, _ = run(["--config", "mixtral-8x7b-2layers.json", "--tp", "2", "--json"])
doc = json.loads(out)
check(set(doc) >= {"tensors", "report", "totals"}, "top-level keys")
for t in doc["tensors"]:
    check(set(t) >= {"name", "style", "global_shape", "rank_shapes", "bytes_per_rank"},
          f"tensor keys of {t.get('name')}")
    check(len(t["rank_shapes"]) == 2 and len(t["bytes_per_rank"]) == 2, f"two ranks: {t['name']}")
check(set(doc["report"]) >= {"unmatched", "unused_rules", "unsupported", "warnings"}, "report keys")
check(set(doc["totals"]["comm_bytes_per_token_per_layer"]) ==
      {"forward", "backward", "forward_bus", "backward_bus"}, "comm keys")
check(doc["report"]["usable"] is True and doc["report"]["unplaceable"] == [], "usable plan")
check(doc["options"]["split"] == "balanced" and doc["options"]["ep_dispatch"] == "auto", "options")
check(sum(doc["totals"]["param_bytes_per_rank"]) ==
      sum(sum(t["bytes_per_rank"]) for t in doc["tensors"]), "totals add up")

# 3. Any tp for grouped-query attention: Llama-3-8B's 32 query / 8 KV heads at tp 12 (query
#    heads 3 × 8 ranks, then 2 × 4); the report says which KV heads each rank holds and their cost.
rc, out, err = run(["--config", "llama-3-8b.json", "--tp", "12", "--json"])
check(rc == 0, f"llama-3-8b at tp 12: exit {rc}, stderr {err!r}")
if rc == 0:
    doc = json.loads(out)
    warnings = " ".join(doc["report"]["warnings"])
    check(doc["report"]["usable"], "llama-3-8b at tp 12: usable")
    check("KV heads by rank: 0 | 0-1 | 1-2 | 2 | 3 | 3-4 | 4-5 | 5 | 6 | 6 | 7 | 7" in warnings and
          "8 KV heads over tp 12 are held 16 times in all, +100%" in warnings,
          f"llama-3-8b at tp 12: the KV placement is not reported: {warnings!r}")

with tempfile.TemporaryDirectory() as tmp:
    def write(name, text):
        path = os.path.join(tmp, name)
        open(path, "w").write(text)
        return path

    # 3. Tensors from safetensors headers (F32: 4 bytes an element), plus one the preset lacks.
    cfg = write("tiny.json", json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 96, "num_attention_heads": 8, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "vocab_size": 101, "tie_word_embeddings": False}))
    rc, out, _ = run(["--config", cfg, "--tp", "2", "--json"])
    preset = {t["name"]: t for t in json.loads(out)["tensors"]}
    shapes = {n: t["global_shape"] for n, t in preset.items()}
    shapes["model.extra.weight"] = [5, 7]
    header, offset = {}, 0
    for n, s in sorted(shapes.items()):
        size = 4
        for d in s:
            size *= d
        header[n] = {"dtype": "F32", "shape": s, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    st = os.path.join(tmp, "model.safetensors")
    with open(st, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + bytes(offset))
    rc, out, err = run(["--config", cfg, "--tp", "2", "--json", "--safetensors", st])
    check(rc == 0, f"--safetensors: exit {rc}: {err}")
    read = {t["name"]: t for t in json.loads(out)["tensors"]}
    check(set(read) == set(shapes), "--safetensors lists the file's tensors")
    for n, t in preset.items():
        check(read[n]["rank_shapes"] == t["rank_shapes"] and read[n]["style"] == t["style"],
              f"--safetensors places {n} as the preset does")
        check(read[n]["bytes_per_rank"] == [2 * b for b in t["bytes_per_rank"]],
              f"--safetensors counts F32 bytes for {n}")
    check("model.extra.weight" in json.loads(out)["report"]["unmatched"], "extra tensor unmatched")
    # A model directory, as tpx-run takes it: its config.json and its checkpoint's tensors.
    model_dir = os.path.join(tmp, "model")
    os.mkdir(model_dir)
    os.link(cfg, os.path.join(model_dir, "config.json"))
    os.link(st, os.path.join(model_dir, "model.safetensors"))
    rc_dir, out_dir, err_dir = run([model_dir, "--tp", "2", "--json"])
    check(rc_dir == 0 and json.loads(out_dir) == json.loads(out),
          f"tpx-plan MODEL_DIR: exit {rc_dir}, {err_dir!r}, or not --config + --safetensors' plan")

    # 4. Bad input: exit 2, one sentence naming the problem, nothing on stdout.
    bad_json = write("bad.json", '{"hidden_size": 64,')
    unknown = write("unknown.json", '{"layers.*.mlp.up_proj": "colwize"}')
    not_string = write("notstring.json", '{"base_model_tp_plan": {"layers.*.mlp.up_proj": 3}}')
    bad_ds = write("ds.json", '{"tensor_parallel": {"partition_config": {"layer_specs": '
                              '[{"patterns": ["(unclosed"], "partition_type": "row"}]}}}')
    no_preset = write("gpt2.json", '{"model_type": "gpt2", "hidden_size": 64, '
                                   '"num_hidden_layers": 1, "num_attention_heads": 4, '
                                   '"vocab_size": 10}')
    older = write("older.json", '{"base_model_tp_plan": {"layers.*.mlp.up_proj": "local_colwise"}}')
    ep_in_tp = write("ep_in_tp.json", '{"base_model_ep_plan": {"layers.*.mlp.experts": "moe_tp_experts"}}')
    ds_ok = write("ds_ok.json", '{"tensor_parallel": {"partition_config": {"layer_specs": '
                                '[{"patterns": [".*o_proj.*"], "partition_type": "row"}]}}}')
    llama = "llama-3-8b.json"
    # Hostile inputs (issue 16): each exits 2 with one sentence, never a crash, hang or leak.
    base = json.load(open(os.path.join(cases_dir, llama)))
    def config_with(name, **changes):
        return write(name, json.dumps({**base, **changes}))
    nested = write("nested.json", '{"model_type": "llama", "x": ' + "[" * 100000 + "]" * 100000 + "}")
    nested_plan = write("nested_plan.json",
                        '{"base_model_tp_plan": ' + '{"a": ' * 60000 + '"colwise"' + "}" * 60000 + "}")
    huge_number = write("huge_number.json", json.dumps(base).replace('"hidden_size": 4096',
                                                                     '"hidden_size": 1e400'))
    not_utf8 = os.path.join(tmp, "not_utf8.json")
    open(not_utf8, "wb").write(b'{"model_type": "ll\xffama", "hidden_size": 64}')
    fifo = os.path.join(tmp, "fifo.json")
    os.mkfifo(fifo)
    big_index = os.path.join(tmp, "big_index.safetensors")
    header = json.dumps({"model.layers.99999999999999999999.mlp.up_proj.weight":
                         {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    open(big_index, "wb").write(struct.pack("<Q", len(header)) + header + bytes(16))
    nested_ds = write("nested_ds.json", '{"tensor_parallel": {"partition_config": {"layer_specs": '
                                        '[{"patterns": ["(x{1000}){1000}"], "partition_type": "row"}]}}}')
    loop = os.path.join(tmp, "loop")
    os.symlink(loop + "2", loop)
    os.symlink(loop, loop + "2")
    hostile = [
        (["--config", llama, "--safetensors", loop], "cannot read checkpoint"),
        (["--config", loop], "cannot read config"),
        (["--config", "/dev/zero"], "it is not a regular file (a device or other special file)"),
        (["--config", nested], "nests arrays and objects deeper than 64 levels"),
        (["--config", llama, "--plan", nested_plan], "nests arrays and objects deeper than 64 levels"),
        (["--config", huge_number], "number overflow parsing '1e400'"),
        (["--config", not_utf8], "ill-formed UTF-8"),
        (["--config", fifo], "it is not a regular file (a FIFO)"),
        (["--config", tmp], "it is not a regular file (a directory)"),
        (["--config", config_with("h62.json", hidden_size=2 ** 62)],
         "model.embed_tokens.weight: the shape [128256, 4611686018427387904] holds more than 2^63"),
        (["--config", config_with("vocab.json", vocab_size=2 ** 62)], "holds more than 2^63 elements"),
        (["--config", config_with("layers.json", num_hidden_layers=2 ** 40)],
         '"num_hidden_layers" is 1099511627776, more than the 65536 tpx plans'),
        (["--config", config_with("experts.json", model_type="mixtral", num_local_experts=2 ** 30)],
         "the expert count is 1073741824, more than the 65536 tpx plans"),
        (["--config", llama, "--tp", "1000000000"], "--tp takes a whole number from 1 to 65536, got 1000000000"),
        (["--config", llama, "--safetensors", big_index],
         "the index 99999999999999999999 is not a number tpx can hold"),
        (["--config", llama, "--ds-config", nested_ds], "automaton states tpx allows"),
    ]
    bad_cases = [
        ([], "a model directory or --config CONFIG.json is required"),
        ([tmp], "config.json"),  # a directory without config.json: the file it lacks, named
        (["/nonexistent-model-dir"], "/nonexistent-model-dir: not a directory"),
        ([model_dir, "--config", cfg], "give it or --config / --safetensors, not both"),
        ([model_dir, tmp], "one model directory, got"),
        (["--config", "/nonexistent/config.json"], "cannot read config '/nonexistent/config.json'"),
        (["--config", bad_json], "is not valid JSON"),
        (["--config", llama, "--plan", unknown], "unknown style string 'colwize'; known:"),
        (["--config", llama, "--plan", not_string], "the style of key 'layers.*.mlp.up_proj' is 3, not a string"),
        (["--config", llama, "--tp", "0"], "--tp takes a whole number from 1 to 65536, got 0"),
        (["--config", llama, "--tp", "four"], "--tp takes a whole number, got 'four'"),
        (["--config", llama, "--tp", "2", "--ep", "2"], "needs an EP plan"),
        (["--config", "mixtral-8x7b.json", "--tp", "4", "--ep", "2"], "ep must be 1 or equal to tp"),
        (["--config", llama, "--ep-dispatch", "deepep"], "--ep-dispatch must be auto, all_to_all or all_reduce"),
        (["--config", llama, "--json", "--emit-hf-plan"], "give one"),
        (["--config", llama, "--plan", older, "--emit-hf-plan"], "which transformers 5.25 does not register"),
        (["--config", llama, "--plan", ep_in_tp, "--emit-hf-plan"], "refuses in an EP plan"),
        (["--config", llama, "--ds-config", ds_ok, "--emit-hf-plan"], "has no Hugging Face plan form"),
        (["--config", llama, "--ds-config", bad_ds], "is not a valid regular expression"),
        (["--config", no_preset], "there is no preset for model type 'gpt2'"),
        (["--config", llama, "--safetensors", "/nonexistent.safetensors"], "/nonexistent.safetensors"),
        (["--config", llama, "--frobnicate"], "unknown argument '--frobnicate'"),
        (["--config", "/nonexistent/config.json", "--json"], "cannot read config"),
        (["--config", llama, "--tp", "2", "--ep", "2", "--json"], "needs an EP plan"),
    ]
    for args, expected in bad_cases + hostile:
        try:
            rc, out, err = run(args)
        except subprocess.TimeoutExpired:
            rc, out, err = -1, "", "(hung)"
        what = " ".join(args)[:120] or "(no arguments)"
        check(rc == 2, f"{what}: exit {rc}, want 2")
        check(err.startswith("tpx-plan: ") and err.count("\n") == 1,
              f"{what}: stderr is not one line: {err!r}")
        check(expected in err, f"{what}: stderr {err!r} lacks {expected!r}")
        if "--json" not in args:
            check(out == "", f"{what}: printed to stdout")
            continue
        # Under --json the error is also one JSON object on stdout: the sentence, as on stderr.
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
        check(doc == {"tool": "tpx-plan", "error": err[len("tpx-plan: "):-1]},
              f"{what}: stdout is not the error as JSON: {out!r}")

# 5. A plan that cannot place some tensors at this tp still plans every other one: the whole
#    table on stdout with those tensors marked, their sentence on stderr, exit 2.
for args, sentence, marked in [
        (["--config", "llama-3-8b.json", "--tp", "48"], "cannot be split over tp = 48",
         "self_attn.q_proj.weight ×32"),
        (["--config", "mixtral-8x7b.json", "--tp", "16", "--ep", "16"],
         "8 experts cannot be split over ep = 16 ranks", "experts.*.w1.weight ×256")]:
    rc, out, err = run(args)
    what = " ".join(args)
    check(rc == 2, f"{what}: exit {rc}, want 2")
    check(err.startswith("tpx-plan: ") and err.count("\n") == 1 and sentence in err,
          f"{what}: stderr {err!r}")
    rows = [l for l in out.splitlines() if marked in l]
    check(len(rows) == 1 and "unplaceable at this tp" in rows[0], f"{what}: {marked} not marked")
    check("mlp.down_proj.weight ×32" in out or "w2.weight" in out, f"{what}: other tensors planned")
    check("unplaceable at this tp (the plan is not usable): " in out, f"{what}: report section")
    rc, out, err = run(args + ["--json"])
    doc = json.loads(out)
    check(rc == 2 and doc["report"]["usable"] is False and doc["report"]["unplaceable"],
          f"{what} --json: not reported unusable")

# 6. --emit-hf-plan: the preset as a plan transformers 5.24 loads (its own strings, its
#    in-memory names), which parses back to the same placements.
with tempfile.TemporaryDirectory() as tmp:
    for config, extra in [("llama-3-8b.json", ["--tp", "4"]),
                          ("mixtral-8x7b.json", ["--tp", "4"]),
                          ("mixtral-8x7b.json", ["--tp", "8", "--ep", "8"]),
                          ("mixtral-8x7b.json", ["--tp", "4", "--sp"])]:
        rc, emitted, err = run(["--config", config, "--emit-hf-plan"])
        check(rc == 0 and err == "", f"{config} --emit-hf-plan: exit {rc}: {err}")
        plan = json.loads(emitted)
        check(set(plan) <= {"base_model_tp_plan", "base_model_ep_plan", "lm_tp_plan"},
              f"{config}: sections {sorted(plan)}")
        accepted = {"embedding_rowwise", "embedding_colwise", "colwise", "colwise_gather_output",
                    "colwise_rep", "rowwise", "rowwise_split_input", "rowwise_rep",
                    "packed_colwise", "packed_rowwise", "sequence_parallel",
                    "replicated_with_grad_allreduce", "mla_kv_a_proj", "all_reduce",
                    "moe_tp_experts", "moe_identity_expert", "local_params", "replicate",
                    "grouped_gemm", "ep_dispatch_experts"}  # transformers 5.24's registry
        for section in plan.values():
            check(set(section.values()) <= accepted, f"{config}: {section}")
        if "base_model_ep_plan" in plan:
            check("moe_tp_experts" not in plan["base_model_ep_plan"].values(), f"{config}: EP")
        path = os.path.join(tmp, "emitted.json")
        open(path, "w").write(emitted)
        _, preset_out, _ = run(["--config", config, "--json"] + extra)
        rc, back_out, err = run(["--config", config, "--plan", path, "--json"] + extra)
        check(rc == 0, f"{config} --plan emitted {extra}: exit {rc}: {err}")
        a, b = json.loads(preset_out), json.loads(back_out)
        same = all(x["name"] == y["name"] and x["style"] == y["style"] and
                   x["split_dim"] == y["split_dim"] and x["rank_intervals"] == y["rank_intervals"]
                   for x, y in zip(a["tensors"], b["tensors"]))
        check(len(a["tensors"]) == len(b["tensors"]) and same,
              f"{config} {extra}: the emitted plan places tensors otherwise than the preset")
        check(a["totals"] == b["totals"], f"{config} {extra}: totals differ")

rc, out, _ = run(["--help"])
check(rc == 0 and out.startswith("usage: tpx-plan"), "--help")

if failures:
    print(f"{len(failures)} failures")
    sys.exit(1)
print("tpx-plan: all cases pass")
