#!/usr/bin/env python3
"""README.md's C++ snippets as translation units, so the README cannot drift from the code.

Every ```cpp block of README.md follows a marker line `<!-- snippet: NAME -->`, and
tests/readme/NAME.cpp.in is the program around it: `@INCLUDES@` becomes the block's leading
#include and `using namespace` lines, `@SNIPPET@` the rest, behind a #line directive so that a
compiler error names README.md and its line.

  snippets.py generate README.md NAME TEMPLATE OUT.cpp   writes one unit
  snippets.py check README.md TEMPLATE_DIR NAME…         every block has a marker and a template,
                                                          and NAME… (what the build compiles) are
                                                          exactly the markers
"""
import pathlib
import re
import sys

MARKER = re.compile(r"^<!-- snippet: ([a-z0-9_]+) -->$")


def blocks(readme):
    """(name or None, first line number of the code, code lines) of every ```cpp block."""
    lines = pathlib.Path(readme).read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```cpp":
            marker = MARKER.match(lines[i - 1].strip()) if i > 0 else None
            start = i + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                sys.exit(f"{readme}:{i + 1}: a ```cpp block that never closes")
            found.append((marker.group(1) if marker else None, start + 1, lines[start:end]))
            i = end
        i += 1
    return found


def generate(readme, name, template, out):
    matches = [b for b in blocks(readme) if b[0] == name]
    if len(matches) != 1:
        sys.exit(f"{readme}: {len(matches)} blocks are marked 'snippet: {name}'; one must be")
    _, first, code = matches[0]
    head = 0
    while head < len(code) and (code[head].startswith("#include") or
                                code[head].startswith("using namespace") or not code[head].strip()):
        head += 1
    readme_path = pathlib.Path(readme).resolve().as_posix()
    includes = "\n".join([f'#line {first} "{readme_path}"'] + code[:head])
    body = "\n".join([f'#line {first + head} "{readme_path}"'] + code[head:])
    text = pathlib.Path(template).read_text(encoding="utf-8")
    for placeholder in ("@INCLUDES@", "@SNIPPET@"):
        if text.count(placeholder) != 1:
            sys.exit(f"{template}: {placeholder} must appear exactly once")
    text = text.replace("@INCLUDES@", includes).replace("@SNIPPET@", body)
    pathlib.Path(out).write_text(text, encoding="utf-8")


def check(readme, template_dir, built):
    errors = []
    names = []
    for name, first, _ in blocks(readme):
        if name is None:
            errors.append(f"{readme}:{first - 1}: a ```cpp block without a "
                          "'<!-- snippet: NAME -->' line before it: no test compiles it")
            continue
        names.append(name)
        if not (pathlib.Path(template_dir) / f"{name}.cpp.in").is_file():
            errors.append(f"{readme}:{first - 1}: snippet '{name}' has no {template_dir}/{name}.cpp.in")
    for name in sorted(set(n for n in names if names.count(n) > 1)):
        errors.append(f"{readme}: snippet '{name}' is marked more than once")
    for name in sorted(set(names) - set(built)):
        errors.append(f"snippet '{name}' is in {readme} but tests/meson.build does not build it")
    for name in sorted(set(built) - set(names)):
        errors.append(f"tests/meson.build builds snippet '{name}', which {readme} no longer has")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"{len(names)} C++ snippets in {readme}, each compiled by a test: {', '.join(names)}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "generate":
        generate(*sys.argv[2:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
