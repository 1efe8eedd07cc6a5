"""Image folders as a dataset: PATH/CLASS/* or PATH/SPLIT/CLASS/*.

Class ids follow the sorted class folder names (the union over splits, so every
split agrees). Within a split, files take file_index's fixed class-mixed order,
and files that cannot be decoded are left out and reported in one warning
(file_index finds them, decoding only what its index cache does not know).
"""

from __future__ import annotations

import collections
import os

from absl import logging

from tfpipe.data import file_index
from tfpipe.errors import TfpipeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
DEFAULT_SPLIT = "train"


def index_folder(root: str, cache_dir: str | None = None) -> file_index.FileIndex:
    """The folder's files and labels; cache_dir: where the index cache lives (None: none)."""
    root = os.path.abspath(os.path.expanduser(root))
    not_read: list[str] = []
    layout = find_layout(root, not_read=not_read)
    if not_read:
        _warn_not_read(root, not_read)
    class_names = tuple(sorted({name for classes in layout.values() for name in classes}))
    class_ids = {name: i for i, name in enumerate(class_names)}
    all_files = [path for classes in layout.values() for files in classes.values() for path in files]
    unreadable, signatures = file_index.undecodable(all_files, root, cache_dir)
    splits = {
        split: file_index.mixed_order(
            [(path, class_ids[name]) for name, files in classes.items() for path in files if path not in unreadable],
            root,
        )
        for split, classes in layout.items()
    }
    if unreadable:
        logging.warning(
            "Skipped %d of %d files in %s that could not be decoded as images (for example %s).",
            len(unreadable),
            len(all_files),
            root,
            sorted(unreadable)[0],
        )
    if not any(paths for paths, _ in splits.values()):
        raise TfpipeError(f"folder {root} has no image that can be decoded: every file failed to decode")
    return file_index.FileIndex.of(root, class_names, splits, unreadable, signatures)


def find_layout(root: str, not_read: list[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """split -> class -> image paths, for either supported layout.

    not_read: if given, receives the other files found in the class folders
    (formats tfpipe does not read), so they can be reported instead of lost silently.
    """
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise TfpipeError(f"--dataset=folder:{root}: {root} {what}; give a folder laid out as PATH/CLASS/*.jpg")
    subfolders = _subfolders(root)
    if not subfolders:
        raise TfpipeError(
            f"folder {root} has no class subfolders: put the images of each class in a folder of its own, "
            f"{root}/CLASS/*.jpg, or split folders {root}/SPLIT/CLASS/*.jpg"
        )
    direct = {name: _images_directly_in(path) for name, path in subfolders.items()}
    if any(direct.values()):  # PATH/CLASS/*
        layout = {DEFAULT_SPLIT: {name: images_below(path, not_read) for name, path in subfolders.items()}}
    else:  # PATH/SPLIT/CLASS/*
        layout = {
            split: {name: images_below(path, not_read) for name, path in _subfolders(split_path).items()}
            for split, split_path in subfolders.items()
        }
        layout = {split: classes for split, classes in layout.items() if classes}
    if not any(files for classes in layout.values() for files in classes.values()):
        raise TfpipeError(
            f"folder {root} has no images: expected files ending in {', '.join(IMAGE_EXTENSIONS)} "
            f"in {root}/CLASS/ or {root}/SPLIT/CLASS/"
        )
    return layout


def _subfolders(path: str) -> dict[str, str]:
    return {
        entry.name: entry.path
        for entry in sorted(os.scandir(path), key=lambda e: e.name)
        if entry.is_dir() and not entry.name.startswith(".")
    }


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _images_directly_in(path: str) -> list[str]:
    return sorted(entry.path for entry in os.scandir(path) if entry.is_file() and _is_image(entry.name))


def images_below(path: str, not_read: list[str] | None = None) -> list[str]:
    """Image files below `path`, recursively, in a stable order; hidden files and folders skipped."""
    found = []
    for folder, subdirs, files in os.walk(path, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found.extend(os.path.join(folder, name) for name in sorted(files) if _is_image(name))
        if not_read is not None:
            not_read.extend(
                os.path.join(folder, name) for name in sorted(files) if not name.startswith(".") and not _is_image(name)
            )
    return found


def _warn_not_read(root: str, paths: list[str]) -> None:
    """One warning for the files left out because of their format, counted by extension."""
    extensions = collections.Counter(os.path.splitext(path)[1].lower() or "(no extension)" for path in paths)
    logging.warning(
        "Left out %d files in %s that tfpipe does not read (%s; for example %s): it reads %s; convert the others "
        "to JPEG or PNG to use them.",
        len(paths),
        root,
        ", ".join(f"{extension}: {count}" for extension, count in extensions.most_common()),
        sorted(paths)[0],
        ", ".join(IMAGE_EXTENSIONS),
    )
