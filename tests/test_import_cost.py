"""`import treadle` and plugin discovery stay light: heavy libraries load only where used."""

from __future__ import annotations

import json
import subprocess
import sys

# tqdm: imported when a progress bar is first drawn
HEAVY = [
    "pandas",
    "onnx",
    "onnxscript",
    "croniter",
    "wandb",
    "psycopg",
    "torch._dynamo",
    "sympy",
    "tqdm",
]

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


DISCOVERY_WITHOUT_TORCH = """
import json, sys
from treadle.plugins import make_plugin_manager
from treadle.registry import KINDS
manager = make_plugin_manager()
listed = {kind: manager.registry(kind).names() for kind in KINDS}
print(json.dumps({"torch": "torch" in sys.modules, "listed": listed}))
"""


def test_discovery_and_listing_every_registry_do_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", DISCOVERY_WITHOUT_TORCH],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = json.loads(result.stdout)
    assert found["torch"] is False
    assert "tiny_gpt" in found["listed"]["models"], "the built-ins are registered all the same"
    assert "language_modeling" in found["listed"]["losses"]


LAZY_PACKAGE = """
import json, sys
import treadle_collators, treadle_losses, treadle_models
before = "torch" in sys.modules
names = [treadle_models.TinyGPT.__name__, treadle_losses.VisionLoss.__name__,
         treadle_collators.VisionCollator.__name__]
print(json.dumps([before, "torch" in sys.modules, names, "TinyGPT" in dir(treadle_models)]))
"""


def test_built_in_packages_export_their_public_names_on_first_use() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAZY_PACKAGE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    before, after, names, listed = json.loads(result.stdout)
    assert before is False
    assert after is True
    assert names == ["TinyGPT", "VisionLoss", "VisionCollator"]
    assert listed is True
