"""Generate docs/hooks.md from treadle.hookspecs: python docs/generate_hooks.py"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from treadle import hookspecs

HEADER = """# Hook reference

Generated from `core/treadle/hookspecs.py` by `python docs/generate_hooks.py`; a test fails
when this file and the docstrings disagree. The module docstring:

"""


def render() -> str:
    parts = [HEADER, inspect.getdoc(hookspecs) or "", "\n"]
    for name, function in vars(hookspecs).items():
        if not name.startswith("treadle_") or not callable(function):
            continue
        opts = getattr(function, "treadle_spec", {}) or {}
        signature = inspect.signature(function)
        flags = ", ".join(key for key in ("firstresult", "historic") if opts.get(key))
        parts.append(
            f"\n## `{name}`\n\n```python\ndef {name}{str(signature).replace(chr(39), '')}\n```\n"
        )
        if flags:
            parts.append(f"\n*{flags}*\n")
        parts.append(f"\n{inspect.getdoc(function)}\n")
    return "".join(parts)


if __name__ == "__main__":
    target = Path(__file__).with_name("hooks.md")
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
