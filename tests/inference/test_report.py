"""The pictures draw on matplotlib Figures of their own: at their sizes, with pyplot unavailable."""

import json
import subprocess
import sys

# pyplot made unimportable first (as the bin/ tools keep it from Keras' import): a picture that
# needed it would fail. Prints each picture's pixel size from its PNG header.
_DRAW = """
import json, os, struct, sys
sys.modules["matplotlib.pyplot"] = None
import numpy as np
from tfpipe.inference import report

folder = sys.argv[1]
history = [
    {"epoch": 1, "phase": "feature_extraction", "accuracy": 0.6, "val_accuracy": 0.7, "loss": 0.9,
     "val_loss": 0.8, "training_seconds": 2.0, "input_wait": 0.1},
    {"epoch": 2, "phase": "fine_tune", "accuracy": 0.9, "val_accuracy": 0.95, "loss": 0.3,
     "val_loss": 0.2, "training_seconds": 3.0, "input_wait": 0.02},
]
report.plot_history(history, os.path.join(folder, "curves.png"), marked_phase="fine_tune")
report.plot_time(history, os.path.join(folder, "time.png"))
report.plot_confusion_matrix(
    {"confusion_matrix": [[5, 1], [0, 6]], "class_names": ["cat", "dog"], "split": "test", "accuracy": 0.917},
    os.path.join(folder, "confusion.png"),
)
image = np.zeros([8, 8, 3], np.uint8)
report.plot_mistakes([(image, 0, 1, 0.8), (image, 1, 0, 0.6)], ["cat", "dog"], os.path.join(folder, "mistakes.png"))
stages = {"pipeline": {"read": 9000.0, "decode": 1500.0, "augment": None}, "model": {"frozen": 200.0, "fine-tuning": 90.0}}
report.plot_stages(stages, os.path.join(folder, "stages.png"), "stages")
sizes = {}
for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\\x89PNG\\r\\n\\x1a\\n", name
    sizes[name] = list(struct.unpack(">II", header[16:24]))
print(json.dumps({"sizes": sizes, "pyplot": sys.modules["matplotlib.pyplot"] is not None}))
"""


def test_every_picture_draws_at_its_size_without_pyplot(tmp_path):
    process = subprocess.run([sys.executable, "-c", _DRAW, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    drawn = json.loads(process.stdout.splitlines()[-1])
    # figsize x dpi: (8, 8) and (8, 4) at 100; a 2-class matrix (5, 4) at 100; one row of four
    # mistakes (12, 3.3) at 80; two rated stages (8, 0.6 x 2 + 2) at 100.
    assert drawn["sizes"] == {
        "confusion.png": [500, 400],
        "curves.png": [800, 800],
        "mistakes.png": [960, 264],
        "stages.png": [800, 320],
        "time.png": [800, 400],
    }
    assert not drawn["pyplot"]
