"""transformers' own modeling code at float64 throughout, and the fixtures' JSON form, for the
reference scripts
(tests/model/make_reference.py, tests/layer/make_mla_reference.py,
tests/layer/make_deepseek_moe_reference.py, tests/ops/make_routing_reference.py).

transformers computes RoPE frequencies, RMSNorm, the eager softmax and some routers' logits in
float32 even in a float64 model. `float64_module` re-executes a transformers module with those
casts (torch.float32, torch.float, .float()) rewritten to float64, so a reference is
transformers' arithmetic at float64 and nothing else.
"""

import importlib
import inspect
import json
import re


def float64_module(name):
    """Re-executes the transformers module `name` with its float32 casts turned into float64."""
    mod = importlib.import_module(name)
    src = inspect.getsource(mod)
    src = re.sub(r"torch\.float32\b", "torch.float64", src)
    src = re.sub(r"torch\.float\b", "torch.float64", src)
    src = src.replace(".float()", ".double()")
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def tensor_json(t):
    """A tensor as the JSON fixtures store it: its shape and its values in float64, flat."""
    import torch
    t = t.detach().to(torch.float64).contiguous()
    return {"shape": list(t.shape), "data": t.flatten().tolist()}


def write_fixture(path, fields):
    """Writes a JSON fixture: the transformers and torch versions that made it, then `fields`."""
    import torch
    import transformers
    out = {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    out.update(fields)
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
