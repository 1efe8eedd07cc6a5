"""Every command and snippet of the README runs: the tour's commands on a tiny folder (with flags
that make them seconds long appended), then its Python snippets. The two commands at the top
(install and run; install and test) are what CI and a fresh clone run."""

import json
import os
import re
import shlex
import textwrap

import pytest
from helpers.images import imbalanced_folder
from helpers.runs import TINY_BASE_FLAGS
from helpers.tools import REPO, run_tool

README = os.path.join(REPO, "README.md")
# What each tool gets appended, so that it runs in seconds on a tiny folder with the tiny test base.
FAST = {
    "train": [*TINY_BASE_FLAGS, "--image_size=32", "--batch_size=4", "--initial_epochs=1", "--fine_tune_epochs=1"],
    "evaluate": [],
    "predict": [],
    "export_model": ["--representative_images=20"],
    "bench_input": [
        "--backbone=tiny_test_base",
        "--fine_tune_at=9",
        "--image_size=32",
        "--batch_size=4",
        "--epochs=2",
        "--noclassic",
    ],
}
EXPECTED = {
    "train": "test accuracy",
    "evaluate": "accuracy",
    "predict": "photo.jpg",
    "export_model": "Wrote best_int8.tflite",
    "bench_input": "bound: ",
}


def _blocks(language: str) -> list[str]:
    """The README's fenced blocks of `language`, dedented (some sit inside list items)."""
    return [textwrap.dedent(block) for block in re.findall(rf"```{language}\n(.*?)```", open(README).read(), re.DOTALL)]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    assert os.path.getsize(README) <= 12_500
    first, second = _blocks("sh")[:2]
    assert first.strip().endswith("bin/train --fine_tune_at=100 --initial_epochs=10")
    assert second.strip().endswith("pip install '.[test]' && pytest")


@pytest.fixture(scope="module")
def tour(tmp_path_factory, data_dir):
    """The tour's commands, run one after the other on a tiny folder: (folder, photo, run, outputs)."""
    root = tmp_path_factory.mktemp("tour")
    folder = imbalanced_folder(root / "pets", (15, 15), size=40)
    photo = str(root / "photo.jpg")
    import numpy as np
    from helpers.images import write_image

    write_image(photo, np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8), "jpeg")
    run = str(root / "runs" / "pets")
    commands = [line for block in _blocks("sh")[2:] for line in block.splitlines() if line.startswith("bin/")]
    assert [command.split()[0] for command in commands] == [f"bin/{tool}" for tool in FAST], commands
    outputs = {}
    for command in commands:
        text = command.replace("/data/pets", folder).replace("runs/pets", run).replace("photo.jpg", photo)
        tool, *args = shlex.split(text)
        tool = os.path.basename(tool)
        result = run_tool(tool, *args, *FAST[tool], f"--data_dir={data_dir}" if tool != "predict" else "--top_k=2",
                          tiny_base=tool in ("train", "bench_input"), timeout=600)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        assert EXPECTED[tool] in result.stdout, (command, result.stdout[-2000:])
        outputs[tool] = result.stdout
    return folder, photo, run, outputs


@pytest.mark.slow
def test_the_tour_runs_command_by_command(tour):
    folder, photo, run, outputs = tour
    # What the tour's bullets promise of each output.
    with open(os.path.join(run, "evaluation", "report.json")) as f:
        report = json.load(f)
    assert len(report["confusion_matrix"]) == 2 and {"precision", "recall"} <= set(report["per_class"]["c0"])
    for picture in ("confusion_matrix.png", "mistakes.png"):
        assert os.path.isfile(os.path.join(run, "evaluation", picture))
    assert os.path.isfile(os.path.join(run, "exported", "best_int8.tflite"))
    (verdict,) = [line for line in outputs["bench_input"].splitlines() if line.startswith("bound: ")]
    from tfpipe.bench import stages

    model_bound = verdict.startswith("bound: the model bounds training at ") and "input is not the bottleneck" in verdict
    stage_bound = [name for name, what in stages.ADVICE.items() if verdict.startswith(f"bound: {what} (")
                   or verdict.startswith(f"bound: {what} bounds the first epoch at ")]
    assert model_bound or (len(stage_bound) == 1 and verdict.endswith(stages.FLAGS[stage_bound[0]])), verdict


@pytest.mark.slow
def test_the_readme_python_snippets_run(tour, monkeypatch, tmp_path):
    folder, photo, run, _ = tour
    mediapipe_snippet, library_snippet = _blocks("python")
    # The MediaPipe lines, in the folder of the exported file, on the tour's photo.
    monkeypatch.chdir(os.path.join(run, "exported"))
    namespace = {}
    exec(mediapipe_snippet.replace('"photo.jpg"', repr(photo)), namespace)  # noqa: S102
    assert namespace["top"].category_name in ("c0", "c1") and 0 < namespace["top"].score <= 1
    # The library lines, on the tour's folder, with the tiny settings the tour's train had.
    from helpers.runs import TINY_BASE_SETTINGS, TINY_PIPELINE

    import tfpipe

    real = tfpipe.TrainConfig

    def tiny(**settings):
        settings = dict(settings, model_dir=str(tmp_path / "demo"), dataset=f"folder:{folder}")
        return real(**settings, **TINY_BASE_SETTINGS, pipeline=TINY_PIPELINE, initial_epochs=1, fine_tune_epochs=1,
                    export=False, verbose=0)

    monkeypatch.setattr(tfpipe, "TrainConfig", tiny, raising=False)
    namespace = {}
    code = library_snippet.replace('"runs/demo"', repr(str(tmp_path / "demo"))).replace('"photo.jpg"', repr(photo))
    exec(code, namespace)  # noqa: S102
    assert namespace["results"]["test_accuracy"] is not None and namespace["rows"][0].ok
