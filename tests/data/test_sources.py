"""Dataset sources: tfds split slicing, image folders, metadata."""

import logging
import os

import pytest

from tfpipe.data import file_index, sources
from tfpipe.errors import TfpipeError


def _encoded(source, split):
    return [image for image, _ in source.encoded(split).as_numpy_iterator()]


def test_tutorial_slicing_counts_on_the_embedded_builder(tiny_source):
    metadata = sources.describe(tiny_source, train="train[:80%]", validation="train[80%:90%]", test="train[90%:]")
    assert metadata.num_examples == {"train": 32, "validation": 4, "test": 4}
    assert metadata.class_names == ("ellipse", "rectangle") and metadata.num_classes == 2
    assert [len(_encoded(tiny_source, s)) for s in ("train[:80%]", "train[80%:90%]", "train[90%:]")] == [32, 4, 4]


def test_slices_are_disjoint_and_cover_the_split(tiny_source):
    parts = [set(_encoded(tiny_source, s)) for s in ("train[:80%]", "train[80%:90%]", "train[90%:]")]
    assert sum(len(p) for p in parts) == 40
    assert len(parts[0] | parts[1] | parts[2]) == 40


@pytest.mark.parametrize(
    "split, count",
    [("train[5:15]", 10), ("train[:10%]+train[90%:]", 8), ("train", 40), ("train[-6:]", 6)],
)
def test_absolute_percent_and_union_slices(tiny_source, split, count):
    assert tiny_source.count(split) == count
    assert len(_encoded(tiny_source, split)) == count


def test_files_of_formats_tfpipe_does_not_read_get_one_warning(image_folder, caplog):
    root = image_folder(per_class=2, corrupt=False)
    for name in ("cat/a.webp", "cat/b.WEBP", "dog/c.tiff", "dog/.hidden"):
        with open(os.path.join(root, name), "wb") as out:
            out.write(b"not read")
    with caplog.at_level(logging.WARNING):
        source = sources.open_source(f"folder:{root}")
    warnings = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert len(warnings) == 1
    assert "Left out 3 files" in warnings[0] and ".webp: 2, .tiff: 1" in warnings[0]
    assert source.split_sizes() == {"train": 4}


def test_folder_with_class_subfolders_is_one_train_split(image_folder, caplog):
    root = image_folder(per_class=6)
    with caplog.at_level(logging.WARNING):
        source = sources.open_source(f"folder:{root}")
    assert source.class_names == ("cat", "dog")
    assert source.split_sizes() == {"train": 12}  # the planted broken.jpg is left out
    warnings = [r.getMessage() for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert len(warnings) == 1
    assert "Skipped 1 of 13 files" in warnings[0] and "broken.jpg" in warnings[0]
    assert source.unreadable_files == (os.path.join(root, "cat", "broken.jpg"),)


def test_folder_labels_follow_sorted_class_names_and_every_format_decodes(image_folder):
    root = image_folder(per_class=4, classes=("zebra", "ant", "moth"), corrupt=False)
    source = sources.open_source(f"folder:{root}")
    assert source.class_names == ("ant", "moth", "zebra")
    seen = {}
    for path, label in zip(*source._index.splits["train"]):
        seen.setdefault(os.path.basename(os.path.dirname(path)), set()).add(label)
        assert path.endswith((".jpg", ".png", ".bmp", ".gif"))
    assert seen == {"ant": {0}, "moth": {1}, "zebra": {2}}
    images = [file_index.decode_image(encoded) for encoded, _ in source.encoded("train")]
    assert len(images) == 12 and all(image.shape[-1] == 3 for image in images)


def test_folder_with_split_subfolders_names_splits_by_folder(image_folder):
    root = image_folder(per_class=5, splits=("train", "validation"))
    source = sources.open_source(f"folder:{root}")
    assert source.split_sizes() == {"train": 10, "validation": 10}
    metadata = sources.describe(source, train="train", validation="validation", test="validation[:40%]")
    assert metadata.num_examples == {"train": 10, "validation": 10, "test": 4}


def test_folder_percent_slices_mix_classes(image_folder):
    source = sources.open_source(f"folder:{image_folder(per_class=10, corrupt=False)}")
    labels = [int(label) for _, label in source.encoded("train[:50%]")]
    assert len(labels) == 10 and set(labels) == {0, 1}


def test_corrupt_files_never_reach_an_epoch(image_folder):
    source = sources.open_source(f"folder:{image_folder(per_class=3)}")
    for _ in range(2):
        decoded = [file_index.decode_image(encoded) for encoded, _ in source.encoded("train")]
        assert len(decoded) == 6


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("empty", "has no class subfolders"),
        ("no_images", "has no images"),
    ],
)
def test_bad_folders_are_clear_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
        (root / "notes.txt").write_text("hello")
    elif layout == "no_images":
        (root / "cat").mkdir(parents=True)
        (root / "cat" / "readme.txt").write_text("no pictures here")
    with pytest.raises(TfpipeError, match=message):
        sources.open_source(f"folder:{root}")


def test_unknown_dataset_names_the_embedded_dataset_and_the_folder_form(tmp_path):
    with pytest.raises(TfpipeError) as error:
        sources.open_source("cats_vs_dawgs", str(tmp_path))
    message = str(error.value)
    assert "cats_vs_dawgs" in message and "tfpipe_shapes" in message and "folder:PATH" in message


@pytest.mark.parametrize("split", ["train[:80", "train[a:b]", "train[5]", "train[:120%]", "train[[1:2]"])
def test_malformed_split_strings(tiny_source, split):
    with pytest.raises(TfpipeError, match="not a valid split"):
        sources.describe(tiny_source, train=split)


def test_unknown_split_name(tiny_source):
    with pytest.raises(TfpipeError, match="Unknown split 'validation'"):
        sources.describe(tiny_source, train="train", validation="validation")


@pytest.mark.parametrize("split", ["train[10:10]", "train[99%:]", "train[20:5]"])
def test_split_selecting_zero_examples(tiny_source, split):
    with pytest.raises(TfpipeError, match="selects no examples"):
        sources.describe(tiny_source, train="train[:50%]", test=split)


def test_unwritable_data_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(TfpipeError, match="--data_dir=.* is not a writable folder"):
        sources.open_source("tfpipe_shapes/tiny", str(blocker / "datasets"))


def test_the_mean_encoded_size_is_that_of_the_files_that_decode(image_folder):
    root = image_folder(per_class=4)  # and one broken file, which is never read
    source = sources.open_source(f"folder:{root}")
    decodable = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f != "broken.jpg"]
    assert len(decodable) == 8
    expected = sum(os.path.getsize(path) for path in decodable) / len(decodable)
    assert source.mean_encoded_bytes() == pytest.approx(expected)


def test_a_tfds_source_knows_its_mean_encoded_size(tiny_source):
    images = _encoded(tiny_source, "train")
    mean_image = sum(len(image) for image in images) / len(images)
    # The prepared records hold the encoded image and a little framing and label each.
    assert mean_image <= tiny_source.mean_encoded_bytes() < 1.5 * mean_image + 64
