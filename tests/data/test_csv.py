"""csv: datasets: Kaggle-style CSVs of image files and labels."""

import logging

import numpy as np
import pytest
from helpers.images import coloured_square, write_image
from helpers.runs import TINY_BASE_FLAGS, read_json
from helpers.tools import assert_one_line_error, run_tool

from tfpipe.data import csv_labels, sources
from tfpipe.errors import TfpipeError


def _kaggle_folder(tmp_path, rows, *, files=None, header="id,breed", subfolder="train"):
    """labels.csv with `rows` beside SUBFOLDER/ of small JPEGs named by `files` (default: every row's id + .jpg)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "kaggle"
    for name in files if files is not None else [f"{row.replace(';', ',').split(',')[0]}.jpg" for row in rows]:
        write_image(str(root / subfolder / name), coloured_square(rng), "jpeg")
    root.mkdir(exist_ok=True)
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def _rows(count, labels=("boston_bull", "dingo")):
    return [f"id{i:03d},{labels[i % len(labels)]}" for i in range(count)]


def _messages(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_bare_ids_in_a_subfolder_with_header_names(tmp_path):
    root = _kaggle_folder(tmp_path, _rows(12))
    source = sources.open_source(f"csv:{root / 'labels.csv'}")
    assert source.class_names == ("boston_bull", "dingo")
    assert source.split_sizes() == {"train": 12}
    assert source.class_counts("train") == [6, 6]
    assert source.name == f"csv:{root / 'labels.csv'}"


def test_file_names_with_extensions_and_explicit_columns(tmp_path):
    rows = [f"x,{i % 3},pic{i}.jpg" for i in range(9)]
    root = _kaggle_folder(tmp_path, rows, files=[f"pic{i}.jpg" for i in range(9)], header="note,kind,picture")
    options = csv_labels.CsvOptions(image_dir=str(root / "train"), file_column="Picture", label_column="kind")
    source = sources.open_source(f"csv:{root / 'labels.csv'}", csv=options)
    assert source.class_names == ("0", "1", "2")
    assert sorted(source.labels("train")) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_numeric_labels_sort_as_numbers(tmp_path):
    root = _kaggle_folder(
        tmp_path, [f"id{i},{label}" for i, label in enumerate((10, 2, 1, 2, 10, 1))], header="id,label"
    )
    assert sources.open_source(f"csv:{root / 'labels.csv'}").class_names == ("1", "2", "10")


def test_missing_undecodable_unlabelled_and_unlisted_files_are_left_out_with_one_warning_each(tmp_path, caplog):
    rows = _rows(10) + ["ghost1,dingo", "ghost2,dingo", "broken,dingo", "nolabel,"]
    root = _kaggle_folder(tmp_path, rows, files=[f"id{i:03d}.jpg" for i in range(10)] + ["nolabel.jpg", "extra.jpg"])
    (root / "train" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with caplog.at_level(logging.WARNING):
        source = sources.open_source(f"csv:{root / 'labels.csv'}")
    assert source.split_sizes() == {"train": 10}
    assert (
        len(_messages(caplog, "name no image file")) == 1 and "Skipped 2 rows" in _messages(caplog, "name no image")[0]
    )
    assert "'ghost1'" in _messages(caplog, "name no image file")[0]
    assert len(_messages(caplog, "could not be decoded")) == 1 and "broken.jpg" in _messages(caplog, "decoded")[0]
    assert len(_messages(caplog, "have no label")) == 1
    unlisted = _messages(caplog, "no row of")
    assert len(unlisted) == 1 and "Left out 2 image files" in unlisted[0]  # extra.jpg and the unlabelled nolabel.jpg
    assert source.unreadable_files == (str(root / "train" / "broken.jpg"),)


def test_a_label_whose_images_are_all_missing_is_no_class(tmp_path):
    root = _kaggle_folder(tmp_path, _rows(6) + ["ghost,wolf"], files=[f"id{i:03d}.jpg" for i in range(6)])
    assert sources.open_source(f"csv:{root / 'labels.csv'}").class_names == ("boston_bull", "dingo")


def test_slices_are_class_mixed_disjoint_and_fixed(tmp_path):
    root = _kaggle_folder(tmp_path, _rows(40))
    source = sources.open_source(f"csv:{root / 'labels.csv'}")
    parts = [source.labels(s) for s in ("train[:80%]", "train[80%:90%]", "train[90%:]")]
    assert [len(p) for p in parts] == [32, 4, 4]
    assert set(parts[0]) == {0, 1}
    encoded = [set(image for image, _ in source.encoded(s).as_numpy_iterator()) for s in ("train[:50%]", "train[50%:]")]
    assert not encoded[0] & encoded[1]
    again = sources.open_source(f"csv:{root / 'labels.csv'}")
    assert again.labels("train") == source.labels("train")


def test_semicolon_separated_csv(tmp_path):
    root = _kaggle_folder(tmp_path, [row.replace(",", ";") for row in _rows(6)], header="file;label")
    assert sources.open_source(f"csv:{root / 'labels.csv'}").split_sizes() == {"train": 6}


def test_an_id_matching_two_files_is_ambiguous(tmp_path, caplog):
    root = _kaggle_folder(tmp_path, _rows(6), files=[f"id{i:03d}.jpg" for i in range(6)] + ["id000.png"])
    with caplog.at_level(logging.WARNING):
        source = sources.open_source(f"csv:{root / 'labels.csv'}")
    assert source.split_sizes() == {"train": 5}
    assert len(_messages(caplog, "name several image files")) == 1


@pytest.mark.parametrize(
    "make, options, message",
    [
        (lambda root: root / "nope.csv", {}, "does not exist"),
        (lambda root: root, {}, "is a folder"),
        (lambda root: root / "labels.csv", {"file_column": "picture"}, "--csv_file_column='picture' is not a column"),
        (lambda root: root / "labels.csv", {"label_column": "kind"}, "--csv_label_column='kind' is not a column"),
        (lambda root: root / "labels.csv", {"label_column": "id"}, "cannot be both the file and the label column"),
        (lambda root: root / "labels.csv", {"image_dir": "/no/such/dir"}, "--image_dir=/no/such/dir is not a folder"),
        (lambda root: root / "empty.csv", {}, "is empty"),
        (lambda root: root / "odd.csv", {}, "no column looks like the file column"),
    ],
)
def test_bad_csv_input_is_one_clear_error_before_any_decoding(tmp_path, make, options, message):
    root = _kaggle_folder(tmp_path, _rows(4))
    (root / "empty.csv").write_text("")
    (root / "odd.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TfpipeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        sources.check_spec(f"csv:{make(root)}", csv=csv_labels.CsvOptions(**options))


def test_a_csv_that_names_no_existing_image_says_where_it_looked(tmp_path):
    root = _kaggle_folder(tmp_path, _rows(4), subfolder="elsewhere")
    (root / "empty").mkdir()
    with pytest.raises(TfpipeError, match="none of its 4 rows names an image in .*point --image_dir"):
        sources.open_source(f"csv:{root / 'labels.csv'}", csv=csv_labels.CsvOptions(image_dir=str(root / "empty")))


def test_one_class_is_refused_by_train_before_training(tmp_path):
    root = _kaggle_folder(tmp_path, _rows(20, labels=("dingo",)))
    result = run_tool(
        "train", f"--dataset=csv:{root / 'labels.csv'}", "--weights=none", f"--model_dir={tmp_path / 'r'}"
    )
    assert_one_line_error(result, "train", "has 1 class; a classifier needs at least 2")


def test_train_cli_reads_a_csv_dataset_and_evaluate_reopens_it(tmp_path):
    root = _kaggle_folder(tmp_path, [f"img{i:03d}.jpg,{('cat', 'dog')[i % 2]}" for i in range(24)], header="file,label")
    model_dir = tmp_path / "run"
    common = [f"--dataset=csv:{root / 'labels.csv'}", f"--image_dir={root / 'train'}"]
    result = run_tool(
        "train",
        *common,
        f"--model_dir={model_dir}",
        "--image_size=32",
        "--batch_size=4",
        *TINY_BASE_FLAGS,
        "--initial_epochs=1",
        "--fine_tune_epochs=0",
        "--augment=none",
        "--noexport",
        "--train_split=train[:50%]",
        "--val_split=train[50%:75%]",
        "--test_split=train[75%:]",
        tiny_base=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = read_json(model_dir / "results.json")
    assert results["class_names"] == ["cat", "dog"] and results["class_counts"] == {"cat": 6, "dog": 6}
    evaluated = run_tool("evaluate", f"--model_dir={model_dir}", "--split=train[:25%]")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = read_json(model_dir / "evaluation" / "train_25" / "report.json")
    # The CSV's first quarter (6 of 24 rows kept), each image counted once; the accuracy is the
    # share of the confusion matrix's diagonal, as printed.
    matrix = report["confusion_matrix"]
    assert report["examples"] == sum(map(sum, matrix)) == 6 and report["class_names"] == ["cat", "dog"]
    assert report["accuracy"] == pytest.approx((matrix[0][0] + matrix[1][1]) / 6)
    assert f"accuracy {report['accuracy']:.3f}" in evaluated.stdout


def test_train_cli_refuses_a_bad_column_in_one_line(tmp_path):
    root = _kaggle_folder(tmp_path, _rows(4))
    result = run_tool(
        "train", f"--dataset=csv:{root / 'labels.csv'}", "--csv_label_column=kind", f"--model_dir={tmp_path / 'r'}"
    )
    assert_one_line_error(result, "train", "--csv_label_column='kind' is not a column")
