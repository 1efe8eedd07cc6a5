"""The package's public names, and the layering its docstring promises."""

import ast
import os

import pytest

import tfpipe

PACKAGE = os.path.dirname(tfpipe.__file__)
# subpackage -> the tfpipe subpackages it must never import
FORBIDDEN = {
    "data": {"models", "training", "runs", "inference", "bench", "export", "cli"},
    "models": {"data", "training", "runs", "inference", "bench", "export", "cli"},
    "runs": {"data", "models", "training", "inference", "bench", "export", "cli"},
    "inference": {"training", "bench", "export", "cli"},
    "export": {"training", "bench", "cli"},
    "bench": {"training", "runs", "export", "cli"},
    "training": {"bench", "export", "cli"},
}


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _modules(folder):
    for root, _, names in os.walk(os.path.join(PACKAGE, folder)):
        for name in names:
            if name.endswith(".py"):
                yield os.path.join(root, name)


def test_public_names_come_from_tfpipe_itself():
    from tfpipe import ExportConfig, TrainConfig, evaluate_run, export_run, load_run, predict, train
    from tfpipe.export import exporter
    from tfpipe.inference import evaluation
    from tfpipe.inference import predict as predict_module
    from tfpipe.training import config
    from tfpipe.training import train as train_module

    assert train is train_module.train and TrainConfig is config.TrainConfig
    assert predict is predict_module.predict and load_run is predict_module.load
    assert evaluate_run is evaluation.evaluate_run
    assert export_run is exporter.export_run and ExportConfig is exporter.ExportConfig
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        tfpipe.nothing_here  # noqa: B018


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_each_subpackage_imports_only_what_its_docstring_allows(folder):
    for path in _modules(folder):
        for module, names in _imports(path):
            parts = module.split(".")
            if parts[0] != "tfpipe":
                continue
            targets = {parts[1]} if len(parts) > 1 else set(names)
            assert not targets & FORBIDDEN[folder], f"{os.path.relpath(path, PACKAGE)} imports {module} {names}"


def test_only_the_command_line_layer_reads_flags():
    for folder in ("", *FORBIDDEN):
        paths = _modules(folder) if folder else (os.path.join(PACKAGE, n) for n in os.listdir(PACKAGE))
        for path in paths:
            if not path.endswith(".py") or os.sep + "cli" + os.sep in path:
                continue
            for module, names in _imports(path):
                assert not (module == "absl" and "flags" in names) and module != "absl.flags", path
