#!/usr/bin/env python3
"""Writes tests/plan/fixtures/python_re_cases.json: Python's own verdict (re.match, as DeepSpeed
matches its layer specs) for patterns and names, the oracle tests/plan/pattern.cpp holds
tpx::plan::name_pattern to.

Each case is a pattern with either Python's compile error, or "unsupported" (it holds a
backreference, lookaround, atomic group or possessive quantifier, which tpx refuses), or the
names it was matched against with Python's yes/no. The patterns are DeepSpeed's and README's
own, hand-picked edge cases, and random strings of regex tokens (seeded: the file is the same on
every run of the same Python).

  python3 tests/plan/make_pattern_cases.py          # rewrites the fixture
"""
import json
import pathlib
import random
import re
import sys
import warnings

try:  # Python 3.11+
    import re._parser as sre_parse
    import re._constants as sre_constants
except ImportError:  # pragma: no cover
    import sre_parse
    import sre_constants

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "python_re_cases.json"

# What tpx refuses: no automaton matches these (or DeepSpeed does not use them).
UNSUPPORTED = {name for name in ("GROUPREF", "GROUPREF_EXISTS", "ASSERT", "ASSERT_NOT",
                                 "ATOMIC_GROUP", "POSSESSIVE_REPEAT")}


def unsupported(parsed):
    for op, av in parsed:
        if str(op) in UNSUPPORTED:
            return True
        for x in av if isinstance(av, (list, tuple)) else ():
            if isinstance(x, sre_parse.SubPattern) and unsupported(x):
                return True
            if isinstance(x, (list, tuple)):
                for y in x:
                    if isinstance(y, sre_parse.SubPattern) and unsupported(y):
                        return True
    return False


REAL_NAMES = [
    "model.layers.0.self_attn.o_proj.weight", "model.layers.11.self_attn.q_proj.weight",
    "model.layers.3.mlp.down_proj.weight", "model.layers.3.mlp.gate_up_proj.weight",
    "model.layers.2.block_sparse_moe.experts.7.w1.weight", "lm_head.weight",
    "model.embed_tokens.weight", "transformer.h.0.attn.c_attn.weight", "layers.0.qkv_proj.bias",
    "model.norm.weight", "", "o_proj.weight", "model.layers.0.self_attn.o_proj.weight\n",
    "modèle.couches.0.o_proj.weight", "model.layers.٣.o_proj.weight",
]

HAND_PATTERNS = [
    r".*\.o_proj\.weight$", r".*\.down_proj\.weight$", r".*\.qkv_proj\.weight$",
    r".*\.gate_up_proj\.weight$", r"lm_head", r".*", r".*\.(q|k|v)_proj\.weight$",
    r"(model\.)?layers\.\d+\.mlp\..*", r"[(*]+x", r"\(a*\)*", r".*\.layers\.\d+\.self_attn\.o_proj\.weight$",
    r".*experts\.\d+\.w[13]\.weight$", r"^model\.layers\.[0-9]{1,2}\.", r"(?:model|transformer)\.",
    r"(?P<prefix>model)\.norm", r"(?#a comment)lm_head", r"lm_head(?#x)*", r"a{,2}b", r"a{}",
    r"a{x}", r"a{1", r"a{ 1}", r"a{,}b", r"a{2,}+", r"x*+", r"\bweight\b", r"\Bight",
    r".*weight\Z", r".*weight$", r"\Amodel", r"[^.]+\.", r"[]a]", r"[^]a]", r"[a-]", r"[\w-]+",
    r"[\d-z]", r"[z-a]", r"\q", r"\_", r"\1", r"(a)\1", r"\0", r"\x41", r"\101", r"\18", r"[\1]",
    r"[\b]", r"$*", r"(*)", r"a)", r"(a", r"[a", r"[]", r"{1}", r"a**", r"a*??", r"a{3,2}",
    r"(?=model)m", r"(?!x)m", r"(?<=a)b", r"(?>a)", r"(?i)model", r"\N{DIGIT ONE}", r"(^)*m",
    r"()*m", r"(?:)", r"|", r"a|", r"(|m)", r"\u00e8", r"\U0001F600", r"mod\u00e8le", r"mod.le",
    r"[\s\S]+", r"[^\W]+", r".*\d\.o_proj", r".*\.(?:o|down)_proj\.weight$", r"(.*)*x$",
    r"(a+)+b", r".*a.*b.*c.*d.*e", r"(x*){2,}", r"((ab)*c)+", r"[a\-z]", r"\.", r"\\", r"\x4",
    r"(?P<a>x)(?P<a>y)", r"(?P=a)", r"(?P<1>a)", r"(?P<>a)", r"(?", r"(?#unterminated",
    r"a{99999}", r"\w{3}\.", r".{3}$", r"[é-ï]", r"\S+\s*$", "model\\.layers\\.\\d+\\.\n",
]

TOKENS = ["a", "b", "m", ".", r"\.", r"\d", r"\w", r"\s", r"\D", r"\W", "[ab]", "[^a]", "[a-c]",
          r"[\d.]", "(", ")", "(?:", "|", "*", "+", "?", "*?", "{1,2}", "{2}", "{,1}", "{2,}", "{",
          "}", "^", "$", r"\b", r"\B", r"\Z", r"\A", "[", "]", "-", "0", "1", "_", "é", r"\n",
          "(?#c)", ",", "\\"]

NAME_ALPHABET = "abm.1_0-é\n"

# Python's own matcher backtracks exponentially on these (a 40-character name takes minutes):
# they are matched against short names only. tpx's automaton answers every name at once.
EXPONENTIAL_IN_PYTHON = {r"(.*)*x$"}


def random_pattern(rng):
    tokens = [rng.choice(TOKENS) for _ in range(rng.randint(1, 8))]
    # A lone backslash only at the end: before a digit it would be a backreference.
    tokens = [t for i, t in enumerate(tokens) if t != "\\" or i == len(tokens) - 1]
    return "".join(tokens)


def random_name(rng):
    return "".join(rng.choice(NAME_ALPHABET) for _ in range(rng.randint(0, 7)))


def case(pattern, names):
    try:
        compiled = re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as e:
        return {"pattern": pattern, "error": str(e)}
    # A leading inline flag such as (?i) is not in the parse tree: sre_parse keeps it in the flags.
    # Nor is \N{NAME}: it parses to the literal character it names. tpx refuses both.
    named = re.search(r"(?<!\\)(?:\\\\)*\\N", pattern) is not None
    if compiled.flags & ~re.UNICODE or named or unsupported(sre_parse.parse(pattern)):
        return {"pattern": pattern, "unsupported": True}
    return {"pattern": pattern, "names": [[n, compiled.match(n) is not None] for n in names]}


def main():
    warnings.simplefilter("ignore", FutureWarning)  # '[[' is a nested set one day
    rng = random.Random(20261202)
    cases = []
    for p in HAND_PATTERNS:
        names = REAL_NAMES + [random_name(rng) for _ in range(12)]
        if p in EXPONENTIAL_IN_PYTHON:
            names = [n for n in names if len(n) <= 16]
        cases.append(case(p, names))
    valid = errors = 0
    while valid < 2000:
        names = [random_name(rng) for _ in range(10)] + rng.sample(REAL_NAMES, 2)
        c = case(random_pattern(rng), names)
        if "error" in c:
            errors += 1
            if errors > 600:
                continue
        else:
            valid += 1
        cases.append(c)
    doc = {"python": sys.version.split()[0],
           "about": "Python's re.match verdicts; written by tests/plan/make_pattern_cases.py",
           "cases": cases}
    OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    counts = {k: sum(1 for c in cases if k in c) for k in ("error", "unsupported", "names")}
    print(f"{OUT}: {len(cases)} patterns: {counts}")


if __name__ == "__main__":
    main()
