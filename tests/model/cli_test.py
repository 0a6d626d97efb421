#!/usr/bin/env python3
"""tpx-run end to end on the hf-tiny models transformers wrote: --json output (generated ids equal
transformers' greedy continuation, the loss, the logits' shape, bytes read per rank), --logits-out
against transformers' float64 logits (--compare), tpx-tiny-model's directories, and every
bad-input case (exit 2, one sentence on stderr, nothing on stdout).

usage: cli_test.py TPX_RUN TPX_TINY_MODEL FIXTURES_DIR      Standard library only.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

run_tool, tiny_tool, fixtures = (os.path.abspath(a) for a in sys.argv[1:4])
failures = []


def run(args, tool=run_tool):
    p = subprocess.run([tool] + args, capture_output=True, text=True,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    return p.returncode, p.stdout, p.stderr


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def read_logits(path):
    """The tensor 'logits' of a safetensors file, as (dtype, shape, values)."""
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    t = header["logits"]
    b, e = t["data_offsets"]
    raw = data[8 + n + b:8 + n + e]
    fmt = {"F64": "d", "F32": "f"}[t["dtype"]]
    return t["dtype"], t["shape"], struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw)


ids = {}
for name in ("llama", "mixtral"):
    prompt = json.load(open(os.path.join(fixtures, name, "prompt.json")))
    ids[name] = prompt

# 1. --json: transformers' greedy ids at several tp, SP and EP; loss with targets.
caches = {}
for name, modes in (("llama", [["--tp", "1"], ["--tp", "3"], ["--tp", "6", "--sp"]]),
                    ("mixtral", [["--tp", "2"], ["--tp", "2", "--sp", "--ep", "2"], ["--tp", "4"]])):
    p = ids[name]
    prompt = ",".join(map(str, p["ids"]))
    targets = ",".join(map(str, p["ids"][1:] + [-100]))
    for mode in modes:
        args = [os.path.join(fixtures, name), "--ids", prompt, "--targets", targets,
                "--generate", str(len(p["greedy"])), "--dtype", "f64", "--json"] + mode
        rc, out, err = run(args)
        what = f"{name} {' '.join(mode)}"
        check(rc == 0 and err == "", f"{what}: exit {rc}, stderr {err!r}")
        if rc != 0:
            continue
        j = json.loads(out)
        check(j["generated"] == p["greedy"], f"{what}: generated {j['generated']} != {p['greedy']}")
        check(j["logits_shape"] == [len(p["ids"]), 97], f"{what}: logits_shape {j['logits_shape']}")
        check(isinstance(j.get("loss"), float) and 3 < j["loss"] < 7, f"{what}: loss {j.get('loss')}")
        check(all(r["bytes_read"] > 0 for r in j["ranks"]) and len(j["ranks"]) == int(mode[1]),
              f"{what}: ranks {j['ranks']}")
        caches[(name, " ".join(mode))] = [r.get("cache_bytes") for r in j["ranks"]]
# The KV cache holds each rank's own KV heads: llama's 3 KV heads over tp 3 are one per rank.
one, three = caches.get(("llama", "--tp 1")), caches.get(("llama", "--tp 3"))
check(one is not None and three is not None and one[0] > 0 and three == [one[0] // 3] * 3,
      f"llama cache bytes per rank: tp 1 {one}, tp 3 {three}")

# 2. --logits-out writes the run's dtype; --compare against transformers' float64 logits.
with tempfile.TemporaryDirectory() as tmp:
    for name in ("llama", "mixtral"):
        prompt = ",".join(map(str, ids[name]["ids"]))
        ref = os.path.join(fixtures, name, "reference.safetensors")
        out_file = os.path.join(tmp, name + ".safetensors")
        rc, out, err = run([os.path.join(fixtures, name), "--ids", prompt, "--tp", "2",
                            "--dtype", "f64", "--logits-out", out_file, "--compare", ref, "--json"])
        check(rc == 0, f"{name} --logits-out: exit {rc}, {err!r}")
        if rc == 0:
            j = json.loads(out)
            check(j["compare"]["max_relative"] <= 1e-12, f"{name}: {j['compare']}")
            dtype, shape, values = read_logits(out_file)
            _, _, want = read_logits(ref)
            check(dtype == "F64" and shape == [7, 97], f"{name}: logits file {dtype} {shape}")
            check(max(abs(a - b) for a, b in zip(values, want)) <= 1e-12 * max(map(abs, want)),
                  f"{name}: written logits differ from transformers'")
        rc, out, err = run([os.path.join(fixtures, name), "--ids", prompt, "--tp", "2",
                            "--logits-out", out_file, "--compare", ref, "--json"])
        check(rc == 0 and read_logits(out_file)[0] == "F32", f"{name}: f32 logits file")
        f32 = json.loads(out) if rc == 0 else None
        # --dtype bf16: the weights held as bf16 (half the bytes), computing in f32; the logits
        # written in f32 stay within bf16's rounding of transformers' float64 ones.
        rc, out, err = run([os.path.join(fixtures, name), "--ids", prompt, "--tp", "2",
                            "--dtype", "bf16", "--logits-out", out_file, "--compare", ref, "--json"])
        check(rc == 0 and err == "", f"{name} --dtype bf16: exit {rc}, {err!r}")
        if rc == 0 and f32:
            j = json.loads(out)
            check(read_logits(out_file)[0] == "F32", f"{name}: bf16 run's logits file")
            check(1e-6 < j["compare"]["max_relative"] <= 3e-2, f"{name} bf16: {j['compare']}")
            for r16, r32 in zip(j["ranks"], f32["ranks"]):
                check(r16["bytes_read"] == r32["bytes_read"] and
                      0.45 * r32["bytes_held"] < r16["bytes_held"] < 0.55 * r32["bytes_held"],
                      f"{name} bf16: held {r16['bytes_held']} bytes, f32 {r32['bytes_held']}")

    # 2b. transformers 5.24's own Mixtral plan (fused expert keys, ep_dispatch_experts) runs its
    # own per-expert checkpoint in every mode.
    plans = json.load(open(os.path.join(fixtures, "..", "..", "..", "plan", "fixtures",
                                        "hf_plans_sample_5_24.json")))
    plan_file = os.path.join(tmp, "mixtral-plan.json")
    json.dump(plans["mixtral"], open(plan_file, "w"))
    mixtral = os.path.join(fixtures, "mixtral")
    for mode in (["--tp", "2"], ["--tp", "4"], ["--tp", "2", "--ep", "2"], ["--tp", "2", "--sp", "--ep", "2"]):
        rc, out, err = run([mixtral, "--ids", ",".join(map(str, ids["mixtral"]["ids"])), "--plan",
                            plan_file, "--dtype", "f64", "--compare",
                            os.path.join(mixtral, "reference.safetensors"), "--json"] + mode)
        what = f"mixtral with transformers' plan {' '.join(mode)}"
        check(rc == 0, f"{what}: exit {rc}, {err!r}")
        if rc == 0:
            j = json.loads(out)
            check(j["plan"] == "plan " + plan_file and j["compare"]["max_relative"] <= 1e-12,
                  f"{what}: {j['plan']} {j['compare']}")

    # 2c. --prompts: a batch of prompts of different lengths gives each prompt's tokens alone,
    # greedy and sampled (a seed repeats), at tp 1 and tp 3; cache bytes per rank.
    batch = [[7], [5, 1, 33, 8, 60], [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46]]
    prompts_file = os.path.join(tmp, "prompts.json")
    json.dump(batch, open(prompts_file, "w"))
    llama_dir = os.path.join(fixtures, "llama")
    for sample in ([], ["--temperature", "0.7", "--top-k", "10", "--top-p", "0.95", "--seed", "5"]):
        for tp in ("1", "3"):
            rc, out, err = run([llama_dir, "--prompts", prompts_file, "--generate", "5", "--tp", tp,
                                "--dtype", "f64", "--json"] + sample)
            what = f"--prompts tp {tp} {' '.join(sample)}"
            check(rc == 0 and err == "", f"{what}: exit {rc}, {err!r}")
            if rc != 0:
                continue
            j = json.loads(out)
            got = j["generated"]
            check(len(got) == 3 and all(1 <= len(g) <= 5 for g in got), f"{what}: {got}")
            check(all(r["cache_bytes"] > 0 for r in j["ranks"]), f"{what}: {j['ranks']}")
            again = json.loads(run([llama_dir, "--prompts", prompts_file, "--generate", "5", "--tp",
                                    tp, "--dtype", "f64", "--json"] + sample)[1])
            check(again["generated"] == got, f"{what}: a second run gave {again['generated']}")
            if not sample:
                for p, g in zip(batch, got):
                    rc1, out1, _ = run([llama_dir, "--ids", ",".join(map(str, p)), "--generate", "5",
                                        "--tp", tp, "--dtype", "f64", "--json"])
                    alone = json.loads(out1)["generated"] if rc1 == 0 else None
                    check(alone == g, f"{what}: prompt {p} alone gives {alone}, in the batch {g}")

    # 2d. generation ends at generation_config.json's end-of-sequence id (over config.json's), as
    # transformers' generate: make the third greedy token the end of sequence.
    p = ids["llama"]
    eos_dir = os.path.join(tmp, "llama-eos")
    shutil.copytree(os.path.join(fixtures, "llama"), eos_dir)
    gen = json.load(open(os.path.join(eos_dir, "generation_config.json")))
    gen["eos_token_id"] = p["greedy"][2]
    json.dump(gen, open(os.path.join(eos_dir, "generation_config.json"), "w"))
    rc, out, err = run([eos_dir, "--ids", ",".join(map(str, p["ids"])), "--generate",
                        str(len(p["greedy"])), "--dtype", "f64", "--json"])
    got = json.loads(out)["generated"] if rc == 0 else None
    check(got == p["greedy"][:3], f"generation_config eos: generated {got}, want {p['greedy'][:3]}")

    # 3. tpx-tiny-model writes directories tpx-run loads; tp 1 and tp 4 agree.
    for family, extra in (("llama", []), ("mixtral", ["--sp", "--ep", "4"])):
        d = os.path.join(tmp, "tiny-" + family)
        rc, out, err = run([d, "--family", family, "--layers", "2"], tool=tiny_tool)
        check(rc == 0 and err == "", f"tpx-tiny-model {family}: exit {rc}, {err!r}")
        one = os.path.join(tmp, family + "-1.safetensors")
        rc1, _, err1 = run([d, "--ids", "1,2,3,4,5", "--dtype", "f64", "--logits-out", one])
        rc4, out4, err4 = run([d, "--ids", "1,2,3,4,5", "--dtype", "f64", "--tp", "4", "--compare",
                               one, "--json"] + extra)
        check(rc1 == 0 and rc4 == 0, f"tiny {family}: {err1!r} {err4!r}")
        if rc4 == 0:
            check(json.loads(out4)["compare"]["max_relative"] <= 1e-12, f"tiny {family}: tp 4 != tp 1")

    # 4. Bad input: exit 2, one line on stderr naming the problem, nothing on stdout.
    llama = os.path.join(fixtures, "llama")

    # The load's progress line: on stderr with --progress (stderr here is a pipe, so never
    # without it); stdout keeps its one JSON object.
    for flags, shown in (([], False), (["--progress"], True)):
        rc, out, err = run([llama, "--tp", "3", "--ids", "5,1,33", "--json"] + flags)
        check(rc == 0 and json.loads(out)["tp"] == 3, f"--progress {flags}: exit {rc}, {err!r}")
        loaded = [line.rstrip() for line in err.splitlines()
                  if line.startswith("tpx-run: loaded ")]
        check((len(loaded) == 1 and loaded[0].endswith(" by 3 ranks")) == shown and
              ("tpx-run: loading" in err or bool(loaded)) == shown,
              f"--progress {flags}: stderr {err!r}")

    def model_copy(edit=None, drop=None):
        d = tempfile.mkdtemp(dir=tmp)
        cfg = json.load(open(os.path.join(llama, "config.json")))
        if edit:
            edit(cfg)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        data = open(os.path.join(llama, "model.safetensors"), "rb").read()
        if drop:  # rewrite the file without one tensor
            n = struct.unpack("<Q", data[:8])[0]
            header = json.loads(data[8:8 + n])
            body = data[8 + n:]
            keep = {k: v for k, v in header.items() if k != drop}
            new_body, at = b"", 0
            for k, v in keep.items():
                if k == "__metadata__":
                    continue
                b, e = v["data_offsets"]
                v["data_offsets"] = [at, at + e - b]
                new_body += body[b:e]
                at += e - b
            h = json.dumps(keep).encode()
            h += b" " * ((8 - len(h) % 8) % 8)
            data = struct.pack("<Q", len(h)) + h + new_body
        open(os.path.join(d, "model.safetensors"), "wb").write(data)
        return d

    def write_json(value):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", dir=tmp, delete=False)
        json.dump(value, f)
        f.close()
        return f.name

    # Text prompts: the tiny Llama with a tokenizer.json of its 97 ids (letters, two merges, a
    # Whitespace pre-tokenizer, no decoder: tokens joined by spaces).
    tokens = ["<unk>"] + [chr(ord("a") + k) for k in range(26)] + ["th", "he"]
    tokens += [f"<t{k}>" for k in range(len(tokens), 97)]
    texted = model_copy()
    json.dump({"version": "1.0", "added_tokens": [], "normalizer": None,
               "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
               "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                         "continuing_subword_prefix": None, "end_of_word_suffix": None,
                         "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                         "vocab": {t: k for k, t in enumerate(tokens)},
                         "merges": [["t", "h"], ["h", "e"]]}},
              open(os.path.join(texted, "tokenizer.json"), "w"))
    want_ids = [27, 5, 3, 1, 20, 0]  # "the cat!": th e | c a t | ! (unknown)
    rc, out, err = run([texted, "--prompt", "the cat!", "--generate", "4", "--json"])
    j = json.loads(out) if rc == 0 else {}
    check(rc == 0 and j.get("prompt_ids") == want_ids and len(j.get("generated", [])) == 4 and
          j.get("generated_text") == " ".join(tokens[k] for k in j["generated"]),
          f"--prompt: exit {rc}, {out!r}, {err!r}")
    rc2, out2, _ = run([texted, "--ids", ",".join(map(str, want_ids)), "--generate", "4", "--json"])
    check(rc2 == 0 and rc == 0 and json.loads(out2)["generated"] == j["generated"],
          "--prompt generates what --ids of its tokens generates")
    rc, out, err = run([texted, "--prompt", "the cat!", "--generate", "4"])
    check(rc == 0 and out.splitlines()[0] == j.get("generated_text"),
          f"--prompt streams the new tokens' text first: {out!r}")
    batch = write_json(["the cat!", "a hat"])
    rc, out, err = run([texted, "--prompts-file", batch, "--generate", "3", "--json"])
    jb = json.loads(out) if rc == 0 else {}
    check(rc == 0 and jb.get("prompt_ids") == [want_ids, [1, 8, 1, 20]] and
          jb["generated"][0] == j["generated"][:3] and len(jb["generated_text"]) == 2,
          f"--prompts-file: exit {rc}, {out!r}, {err!r}")

    good = ["--ids", "5,1,33"]
    bad = [
        ([llama, "--prompt", "hello"], "--prompt needs the model directory's tokenizer.json"),
        ([texted, "--prompt", "x", "--ids", "1"], "they take no --ids"),
        ([texted, "--prompt", "   "], "prompt 0 ('   ') has no tokens"),
        ([texted, "--prompts-file", write_json({"a": 1})], "must hold a non-empty JSON list of texts"),
        ([texted, "--prompts-file", write_json(["ok", 5])], "prompt 1 is 5, not a string"),
        (["/nonexistent/model"] + good, "no such model directory"),
        ([llama], "--ids"),
        ([llama, "--ids", "5,x"], "takes a whole number"),
        ([llama, "--ids", "1,,2"], "--ids '1,,2': entry 2 is empty"),
        ([llama, "--ids", ",1"], "entry 1 is empty"),
        ([llama, "--ids", "1, 2,"], "entry 3 is empty"),
        ([llama, "--ids", "5,97"], "outside the vocabulary [0, 97)"),
        ([llama, "--ids", "5,1", "--targets", "1"], "--targets has 1 ids"),
        ([llama, "--tp", "7"] + good, "cannot be split over tp = 7"),  # 6 query heads
        ([llama, "--tp", "2", "--ep", "2"] + good, "needs an EP plan"),
        ([llama, "--tp", "2", "--ep", "3"] + good, "--ep 3 must be 1 or --tp"),
        ([llama, "--dtype", "f16"] + good, "--dtype must be f64, f32 or bf16"),
        ([llama, "--frobnicate"] + good, "unknown argument '--frobnicate'"),
        ([llama, "--compare", os.path.join(fixtures, "mixtral", "model.safetensors")] + good,
         "no tensor named 'logits'"),
        # an omitted dim takes LlamaConfig's default (4096), which the checkpoint contradicts
        ([model_copy(lambda c: c.pop("hidden_size"))] + good,
         "tensor 'model.embed_tokens.weight' has shape [97, 48] but the model needs [97, 4096]"),
        ([model_copy(lambda c: c.update(model_type="gpt2"))] + good, "model_type 'gpt2'"),
        ([model_copy(lambda c: c["rope_parameters"].update(rope_type="longrope"))] + good,
         "rope_type 'longrope'"),
        ([model_copy(lambda c: c.update(intermediate_size=31))] + good,
         "'model.layers.0.mlp.gate_proj.weight' has shape [30, 48] but the model needs [31, 48]"),
        ([model_copy(drop="model.layers.1.self_attn.v_proj.weight")] + good,
         "no tensor 'model.layers.1.self_attn.v_proj.weight'"),
        ([llama, "--generate", "-1"] + good, "--generate takes a whole number from 0"),
        ([llama, "--prompts", write_json([[5, 1], []]), "--generate", "2"],
         "prompt 1 is empty"),
        ([llama, "--prompts", write_json([[5, 1], [97]]), "--generate", "2"],
         "token 0 of prompt 1 has id 97, outside the vocabulary [0, 97)"),
        ([llama, "--prompts", write_json([5, 1]), "--generate", "2"], "prompt 0 is 5, not a list"),
        ([llama, "--prompts", write_json([[5]])], "--prompts needs --generate N with N ≥ 1"),
        ([llama, "--prompts", write_json([[5]]), "--generate", "2"] + good,
         "--prompts generates from a batch; it takes no --ids"),
        ([llama, "--top-p", "2"] + good, "top_p must be in (0, 1], got 2"),
        ([llama, "--temperature", "-1"] + good, "temperature must be a finite number ≥ 0"),
        ([llama, "--temperature", "hot"] + good, "--temperature takes a number, got 'hot'"),
    ]
    # Hostile inputs (issue 16): each exits 2 with one sentence, never a crash, hang or leak.
    def with_file(name, data):  # a copy of the tiny Llama with one file replaced
        d = model_copy()
        path = os.path.join(d, name)
        os.remove(path)
        if data == "fifo":
            os.mkfifo(path)
        elif data == "loop":
            os.symlink(path + ".2", path)
            os.symlink(path, path + ".2")
        elif data == "dev-zero":
            os.symlink("/dev/zero", path)
        else:
            open(path, "wb").write(data)
        return d

    weights = open(os.path.join(llama, "model.safetensors"), "rb").read()
    loop_dir = os.path.join(tmp, "loop_dir")
    os.symlink(loop_dir + ".2", loop_dir)
    os.symlink(loop_dir, loop_dir + ".2")
    nested_ds = write_json({"tensor_parallel": {"partition_config": {"layer_specs": [
        {"patterns": [".*+\\.o_proj\\.weight$"], "partition_type": "row"}]}}})
    hostile = [
        ([with_file("config.json", b'{"model_type": "llama", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}")] + good,
         "nests arrays and objects deeper than 64 levels"),
        ([with_file("config.json", "fifo")] + good, "it is not a regular file (a FIFO)"),
        ([with_file("config.json", "loop")] + good, "Too many levels of symbolic links"),
        ([with_file("config.json", "dev-zero")] + good, "it is not a regular file (a device or other special file)"),
        ([with_file("config.json", b'{"model_type": "ll\xffama"}')] + good, "ill-formed UTF-8"),
        ([model_copy(lambda c: c.update(hidden_size=2 ** 62))] + good,
         "'model.embed_tokens.weight' has shape [97, 48] but the model needs [97, 4611686018427387904]"),
        ([model_copy(lambda c: c.update(hidden_size=2 ** 62, head_dim=None))] + good,
         "is more than the 65536 tpx's attention supports"),
        ([model_copy(lambda c: c.update(num_hidden_layers=2 ** 40))] + good,
         '"num_hidden_layers" is 1099511627776, more than the 65536 tpx plans'),
        ([with_file("model.safetensors", weights[: len(weights) // 2])] + good, "model.safetensors"),
        ([with_file("model.safetensors", struct.pack("<Q", 1 << 40) + weights[8:])] + good,
         "runs past the end of the file"),
        ([with_file("model.safetensors", "fifo")] + good, "it is not a regular file (a FIFO)"),
        ([with_file("model.safetensors", "dev-zero")] + good, "not a regular file"),
        ([loop_dir] + good, "no such model directory"),
        ([llama, "--ds-config", nested_ds] + good, "uses a possessive quantifier"),
        ([llama, "--ids-file", "/dev/zero"], "it is not a regular file (a device or other special file)"),
        ([llama, "--prompts", write_json([[[[5]]]]), "--generate", "1"], "holds [[5]], not a whole number"),
        ([llama, "--tp", "1000000000"] + good, "--tp takes a whole number from 1 to 65536"),
    ]
    for args, needle in bad + hostile:
        rc, out, err = run(args)
        what = " ".join(args)
        check(rc == 2, f"{what}: exit {rc}, want 2")
        check(out == "", f"{what}: stdout {out!r}")
        check(err.startswith("tpx-run: ") and err.count("\n") == 1 and needle in err,
              f"{what}: stderr {err!r} should name {needle!r}")
    # Under --json an error is also one JSON object on stdout: the sentence stderr has.
    for args, needle in bad[:3]:
        rc, out, err = run(args + ["--json"])
        what = " ".join(args + ["--json"])
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
        check(rc == 2 and needle in err and
              doc == {"tool": "tpx-run", "error": err[len("tpx-run: "):-1]},
              f"{what}: exit {rc}, stdout {out!r}, stderr {err!r}")

print(f"{len(failures)} failed" if failures else "tpx-run cli: all passed")
sys.exit(1 if failures else 0)
