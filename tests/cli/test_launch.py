"""How the bin/ tools start: the garbage collector off through the imports, then the imported
objects frozen out of its sight and the collector back on."""

import json
import os
import subprocess
import sys

from helpers.tools import REPO

TOOLS = sorted(os.listdir(os.path.join(REPO, "bin")))

# Runs each bin/ script with launch() replaced by a probe: what the script did before handing over.
_SCRIPT_PROBE = """
import gc, json, runpy, sys
import tfpipe.cli.launch

seen = {}
tfpipe.cli.launch.launch = lambda module_name, started=None: seen.update({module_name: gc.isenabled()})
for path in sys.argv[1:]:
    gc.enable()
    runpy.run_path(path, run_name="__main__")
print(json.dumps(seen))
"""

_TOOL_MODULE = """
import gc

def main(argv):
    print(gc.isenabled(), gc.get_freeze_count(), flush=True)
"""


def test_every_tool_turns_the_collector_off_before_its_imports():
    paths = [os.path.join(REPO, "bin", tool) for tool in TOOLS]
    process = subprocess.run([sys.executable, "-c", _SCRIPT_PROBE, *paths], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    seen = json.loads(process.stdout.splitlines()[-1])
    assert seen == {f"tfpipe.cli.{tool}": False for tool in TOOLS}


def test_launch_freezes_the_imported_objects_and_turns_the_collector_back_on(tmp_path):
    (tmp_path / "probe_tool.py").write_text(_TOOL_MODULE)
    launch_it = (
        "import gc, sys; gc.disable(); sys.argv = ['probe_tool']; "
        "from tfpipe.cli.launch import launch; launch('probe_tool')"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    process = subprocess.run([sys.executable, "-c", launch_it], capture_output=True, text=True, timeout=300, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    enabled, frozen = process.stdout.split()
    # TensorFlow and Keras alone make hundreds of thousands of tracked objects.
    assert enabled == "True" and int(frozen) > 100_000
