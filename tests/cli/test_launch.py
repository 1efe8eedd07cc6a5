"""How the bin/ tools start: the garbage collector off and matplotlib.pyplot kept from Keras through
the imports, then the imported objects frozen out of the collector's sight, the collector back on
and pyplot importable again."""

import json
import os
import subprocess
import sys

from helpers.tools import REPO

from tfpipe.cli import launch

TOOLS = sorted(os.listdir(os.path.join(REPO, "bin")))

# Runs each bin/ script with tfpipe.cli.launch replaced by a probe (so nothing else is imported):
# the state when the script imports launch, which in the real module imports tfpipe and Keras.
_SCRIPT_PROBE = """
import gc, json, runpy, sys, types

kept, seen = sys.argv[1], {}
probe = types.ModuleType("tfpipe.cli.launch")

def __getattr__(name):  # the script's `from tfpipe.cli.launch import launch`
    state = [gc.isenabled(), kept in sys.modules and sys.modules[kept] is None]
    return lambda module_name, started=None: seen.update({module_name: state})

probe.__getattr__ = __getattr__
sys.modules["tfpipe.cli.launch"] = probe
for path in sys.argv[2:]:
    gc.enable()
    sys.modules.pop(kept, None)
    runpy.run_path(path, run_name="__main__")
print(json.dumps(seen))
"""

_TOOL_MODULE = """
import gc, sys

import tfpipe.cli.train  # train's own imports

def main(argv):
    imported = "matplotlib.pyplot" in sys.modules
    import matplotlib.pyplot
    print(gc.isenabled(), gc.get_freeze_count(), imported, matplotlib.pyplot.__name__, flush=True)
"""


def test_every_tool_turns_the_collector_off_and_keeps_pyplot_from_keras_before_its_imports():
    paths = [os.path.join(REPO, "bin", tool) for tool in TOOLS]
    process = subprocess.run(
        [sys.executable, "-c", _SCRIPT_PROBE, launch.KEPT_FROM_KERAS, *paths],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    seen = json.loads(process.stdout.splitlines()[-1])
    assert seen == {f"tfpipe.cli.{tool}": [False, True] for tool in TOOLS}


def test_a_tool_starts_with_the_collector_on_its_imports_frozen_and_pyplot_importable(tmp_path):
    """bin/train's own start, handing over to a probe tool instead of tfpipe.cli.train."""
    (tmp_path / "probe_tool.py").write_text(_TOOL_MODULE)
    with open(os.path.join(REPO, "bin", "train")) as f:
        script = f.read()
    assert 'launch("tfpipe.cli.train", started)' in script
    (tmp_path / "train").write_text(
        script.replace('launch("tfpipe.cli.train", started)', 'launch("probe_tool", started)')
    )
    # The probe module sits beside the script: the first folder on the script's sys.path.
    process = subprocess.run([sys.executable, str(tmp_path / "train")], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    enabled, frozen, imported, pyplot = process.stdout.splitlines()[-1].split()
    # TensorFlow and Keras alone make hundreds of thousands of tracked objects.
    assert enabled == "True" and int(frozen) > 100_000
    # Keras and train's modules were imported without pyplot, and whatever needs it later can import it.
    assert imported == "False" and pyplot == "matplotlib.pyplot"
