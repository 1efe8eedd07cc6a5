"""The index cache: a folder's decode pass is kept under --data_dir and redone only for what changed."""

import logging
import os

import pytest
from helpers.images import coloured_square, write_image
from helpers.runs import read_json

from tfpipe.data import file_index, sources


@pytest.fixture
def decoded(monkeypatch):
    """Records the paths each start decodes."""
    calls = []
    real = file_index._decodes

    def recording(paths):
        calls.append(sorted(os.path.basename(p) for p in paths))
        return real(paths)

    monkeypatch.setattr(file_index, "_decodes", recording)
    return calls


def _open(root, data_dir):
    return sources.open_source(f"folder:{root}", str(data_dir))


def _files(source):
    return sorted(os.path.basename(p) for p in source._index.splits["train"][0])


def test_an_unchanged_folder_is_not_decoded_again(image_folder, tmp_path, decoded):
    root = image_folder(per_class=4)
    first = _open(root, tmp_path / "data")
    second = _open(root, tmp_path / "data")
    assert len(decoded[0]) == 9 and decoded[1] == []  # 8 images and the broken one, then nothing
    assert second._index == first._index
    assert second.unreadable_files == first.unreadable_files == (os.path.join(root, "cat", "broken.jpg"),)
    caches = os.listdir(tmp_path / "data" / file_index.INDEX_CACHE_DIR)
    assert len(caches) == 1 and caches[0].startswith("images-")


def test_only_touched_and_added_files_are_decoded(image_folder, tmp_path, decoded):
    import numpy as np

    root = image_folder(per_class=4)
    _open(root, tmp_path / "data")
    stat = os.stat(os.path.join(root, "dog", "dog1.png"))
    os.utime(os.path.join(root, "dog", "dog1.png"), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    write_image(os.path.join(root, "dog", "new.jpg"), coloured_square(np.random.default_rng(3)), "jpeg")
    source = _open(root, tmp_path / "data")
    assert decoded[1] == ["dog1.png", "new.jpg"]
    assert "new.jpg" in _files(source)


def test_a_removed_file_leaves_the_index_and_the_cache(image_folder, tmp_path, decoded):
    root = image_folder(per_class=4)
    _open(root, tmp_path / "data")
    os.remove(os.path.join(root, "cat", "cat0.jpg"))
    source = _open(root, tmp_path / "data")
    assert decoded[1] == [] and "cat0.jpg" not in _files(source)
    (cache,) = (tmp_path / "data" / file_index.INDEX_CACHE_DIR).iterdir()
    assert os.path.join("cat", "cat0.jpg") not in read_json(cache)["names"]


def test_a_repaired_file_is_decoded_again_and_used(image_folder, tmp_path, decoded):
    import numpy as np

    root = image_folder(per_class=4)
    assert os.path.join(root, "cat", "broken.jpg") in _open(root, tmp_path / "data").unreadable_files
    write_image(os.path.join(root, "cat", "broken.jpg"), coloured_square(np.random.default_rng(4), size=40), "jpeg")
    source = _open(root, tmp_path / "data")
    assert decoded[1] == ["broken.jpg"]
    assert source.unreadable_files == () and "broken.jpg" in _files(source)


def test_an_unreadable_cache_is_rebuilt_with_a_warning(image_folder, tmp_path, decoded, caplog):
    root = image_folder(per_class=4)
    _open(root, tmp_path / "data")
    (cache,) = (tmp_path / "data" / file_index.INDEX_CACHE_DIR).iterdir()
    cache.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        source = _open(root, tmp_path / "data")
    assert len(decoded[1]) == 9 and len(_files(source)) == 8
    assert any("unreadable index cache" in r.getMessage() for r in caplog.records)
    assert read_json(cache)["version"] == 2  # rewritten


def test_a_csv_dataset_uses_the_cache_of_its_image_folder(tmp_path, decoded):
    import numpy as np

    images = tmp_path / "imgs"
    for i in range(6):
        write_image(str(images / f"p{i}.jpg"), coloured_square(np.random.default_rng(i)), "jpeg")
    (images / "labels.csv").write_text("file,label\n" + "".join(f"p{i},{i % 2}\n" for i in range(6)))
    for _ in range(2):
        sources.open_source(f"csv:{images / 'labels.csv'}", str(tmp_path / "data"))
    assert len(decoded[0]) == 6 and decoded[1] == []
