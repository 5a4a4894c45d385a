"""`import treadle` and plugin discovery stay light: heavy libraries load only where used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["pandas", "onnx", "onnxscript", "croniter", "wandb", "psycopg", "torch._dynamo", "sympy"]

PROBE = """
import json, sys
import treadle
after_import = sorted(m for m in {heavy} if m in sys.modules)
from treadle.plugins import make_plugin_manager
manager = make_plugin_manager()
for kind in ("losses", "collators", "models", "metrics", "loggers", "exporters", "storage",
             "job_types", "commands"):
    manager.registry(kind).names()
after_discovery = sorted(m for m in {heavy} if m in sys.modules)
print(json.dumps([after_import, after_discovery]))
"""


def test_import_and_discovery_load_no_heavy_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    after_import, after_discovery = json.loads(result.stdout)
    assert after_import == []
    assert after_discovery == []


def test_import_treadle_does_not_import_torch_until_a_name_needs_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys, treadle; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == "False"


def test_every_lazy_public_name_resolves() -> None:
    import treadle

    names = treadle._LAZY  # the table itself: a typo there must fail here, not for a user
    missing = [name for name in names if getattr(treadle, name, None) is None]
    assert missing == []
    assert set(names) <= set(treadle.__all__)
    assert set(names) <= set(dir(treadle))
