#!/usr/bin/env python3
"""Writes N small images that share layers, as one OCI image layout, without any network.

Usage: mkmany.py LAYOUT_DIR N

Each image i (ref "i<i>") has two of 6 shared base layers and one layer of its own, and a
config of its own. Prints a JSON object {ref: [manifest, config, layer...]} on stdout.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mkimages import Layout, make_image  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    layout, n = Layout(sys.argv[1]), int(sys.argv[2])
    base = [{f"base/{b}.txt": os.urandom(4096)} for b in range(6)]
    out = {}
    for i in range(n):
        specs = [base[i % 6], base[(i * 5 + 1) % 6], {f"own/{i}.bin": os.urandom(2048)}]
        mdesc, s = make_image(layout, "amd64", specs)
        layout.tag(mdesc, f"i{i}")
        out[f"i{i}"] = [s["manifest"], s["config"]] + s["layers"]
    layout.finish()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
