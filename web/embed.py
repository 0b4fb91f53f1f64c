#!/usr/bin/env python3
"""Turns the console's files into a C source the host is linked with.

Usage: embed.py OUTPUT.c FILE...  Each FILE becomes one entry of px_console_assets
(console_assets.h): index.html is served at "/", any other at "/console/NAME".
"""
import os
import sys

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def c_bytes(data):
    """The bytes of data as lines of a C initialiser."""
    lines = []
    for i in range(0, len(data), 16):
        lines.append("    " + ", ".join("0x%02x" % b for b in data[i:i + 16]) + ",")
    return "\n".join(lines)


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    out, files = argv[1], argv[2:]
    parts = ["/* Made by web/embed.py from web/: edit those files, not this one. */",
             '#include "console_assets.h"', ""]
    entries = []
    for n, path in enumerate(files):
        name = os.path.basename(path)
        ext = os.path.splitext(name)[1]
        if ext not in TYPES:
            sys.stderr.write("embed.py: %s: no content type known for %s\n" % (path, ext))
            return 1
        with open(path, "rb") as f:
            data = f.read()
        url = "/" if name == "index.html" else "/console/" + name
        parts.append("static const unsigned char asset_%d[] = {\n%s\n    0x00\n};" %
                     (n, c_bytes(data)))
        entries.append('    {"%s", "%s", asset_%d, %d},' % (url, TYPES[ext], n, len(data)))
    parts.append("")
    parts.append("const px_console_asset px_console_assets[] = {")
    parts.extend(entries)
    parts.append("    {0, 0, 0, 0},")
    parts.append("};")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts) + "\n")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
