#!/usr/bin/env python3
"""Every header under include/tpx is listed in include/meson.build (so it is installed and
compiled on its own by the header check), and every listed header exists.

usage: headers_listed.py INCLUDE_DIR LISTED_HEADER…   Standard library only.
"""

import os
import sys

root, listed = sys.argv[1], set(sys.argv[2:])
present = set()
for d, _, files in os.walk(os.path.join(root, "tpx")):
    for f in files:
        if f.endswith((".hpp", ".cuh", ".inc")):
            present.add(os.path.relpath(os.path.join(d, f), root))
missing, stale = sorted(present - listed), sorted(listed - present)
for h in missing:
    print(f"include/{h} is not listed in include/meson.build (tpx_header_names): it would not be "
          "installed or checked")
for h in stale:
    print(f"include/meson.build lists {h}, which does not exist")
sys.exit(1 if missing or stale else 0)
