"""Build an HTML template for `dvc plots show --html-template` with Vega inlined.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so its plots stay blank offline.
`make plots` installs the three npm packages into .cache/vega and writes .cache/vega/template.html.
"""

from __future__ import annotations

import sys
from pathlib import Path

BUNDLES = ["vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js"]


def main(node_modules: str, out: str) -> None:
    scripts = "\n".join(f"<script>{(Path(node_modules) / b).read_text()}</script>" for b in BUNDLES)
    # dvc-render fills `{plot_divs}` by plain string replacement, so the inlined JS needs no escaping
    page = (
        "<!DOCTYPE html>\n<html>\n<head>\n<title>lesson5 plots</title>\n"
        + scripts
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )
    Path(out).write_text(page)


if __name__ == "__main__":
    main(*sys.argv[1:3])
