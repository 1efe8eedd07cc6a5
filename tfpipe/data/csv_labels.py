"""Images labelled by a CSV file, as Kaggle's image competitions ship them.

    labels.csv          id,breed                  (or file,label; path,class; ...)
    train/000bec18.jpg  000bec18,boston_bull      an id may leave out the extension

The file and label columns are found by their header names (FILE_COLUMNS,
LABEL_COLUMNS) unless CsvOptions names them. A row's file is looked up below the
image folder (default: the CSV's own folder) by its relative path, then by its
name alone, each with or without an image extension; so ids without extensions
and an images/ or train/ subfolder need no extra flag.

The rows become a file_index.FileIndex with one split, "train", in the same
fixed class-mixed order as a folder's, sliced with the same syntax. Rows whose
file is missing (or ambiguous) or undecodable, rows without a label, repeated
files and image files that no row names are left out, each kind reported by one
warning with its count and an example. Class ids follow the sorted labels of the
rows kept, numerically when every label is a whole number.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os

from absl import logging

from tfpipe.data import file_index, folder
from tfpipe.errors import TfpipeError

PREFIX = "csv:"
SPLIT = "train"
# Header names recognised without --csv_file_column / --csv_label_column, in order of preference.
FILE_COLUMNS = ("file", "filename", "file_name", "path", "filepath", "image", "image_id", "image_name", "img", "id")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "category", "breed", "species", "target")
_SNIFF_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class CsvOptions:
    """How to read a csv: dataset; None: the default (the CSV's folder, columns found by header)."""

    image_dir: str | None = None
    file_column: str | None = None
    label_column: str | None = None


@dataclasses.dataclass(frozen=True)
class _Table:
    path: str
    image_dir: str
    file_column: str
    label_column: str
    rows: list[tuple[str, str]]  # (file as written, label)


def check(csv_path: str, options: CsvOptions = CsvOptions()) -> None:
    """The cheap checks: the CSV, its columns and the image folder exist. Raises TfpipeError."""
    _read_table(csv_path, options)


def index_csv(csv_path: str, options: CsvOptions = CsvOptions(), cache_dir: str | None = None) -> file_index.FileIndex:
    """The CSV's images and labels; cache_dir: where the index cache lives (None: none)."""
    table = _read_table(csv_path, options)
    images = folder.images_below(table.image_dir)
    finder = _FileFinder(table.image_dir, images)
    skipped = collections.defaultdict(list)  # why -> examples
    labelled: dict[str, str] = {}
    for name, label in table.rows:
        path, why = finder.find(name)
        if not label:
            skipped["have no label"].append(name)
        elif path is None:
            skipped[why].append(name)
        elif path in labelled:
            skipped["name a file that an earlier row names"].append(name)
        else:
            labelled[path] = label
    if not labelled:
        example = table.rows[0][0] if table.rows else "(no rows)"
        raise TfpipeError(
            f"--dataset={PREFIX}{table.path}: none of its {len(table.rows)} rows names an image in {table.image_dir} "
            f"(column {table.file_column!r}, for example {example!r}); point --image_dir at the images' folder "
            f"or name the file column with --csv_file_column"
        )
    unreadable, signatures = file_index.undecodable(sorted(labelled), table.image_dir, cache_dir)
    for path in sorted(unreadable):
        skipped["name a file that could not be decoded as an image"].append(os.path.relpath(path, table.image_dir))
        del labelled[path]
    for why, names in skipped.items():
        logging.warning("Skipped %d rows of %s that %s (for example %r).", len(names), table.path, why, names[0])
    unlisted = sorted(set(images) - set(labelled) - unreadable)
    if unlisted:
        logging.warning(
            "Left out %d image files in %s that no row of %s names (for example %s).",
            len(unlisted),
            table.image_dir,
            table.path,
            os.path.relpath(unlisted[0], table.image_dir),
        )
    class_names = _sorted_labels(set(labelled.values()))
    class_ids = {name: i for i, name in enumerate(class_names)}
    entries = [(path, class_ids[label]) for path, label in labelled.items()]
    splits = {SPLIT: file_index.mixed_order(entries, table.image_dir)}
    return file_index.FileIndex.of(table.image_dir, class_names, splits, unreadable, signatures)


def _read_table(csv_path: str, options: CsvOptions) -> _Table:
    path = os.path.abspath(os.path.expanduser(csv_path))
    spec = f"--dataset={PREFIX}{csv_path}"
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise TfpipeError(f"{spec}: {path} {what}; give the CSV file that lists the images and their labels")
    image_dir = os.path.abspath(os.path.expanduser(options.image_dir or os.path.dirname(path)))
    if not os.path.isdir(image_dir):
        raise TfpipeError(f"--image_dir={image_dir} is not a folder; give the folder that holds the CSV's images")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(_SNIFF_BYTES)
            f.seek(0)
            reader = csv.reader(f, _dialect(sample))
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise TfpipeError(f"{spec}: {path} is empty; it needs a header row naming its columns")
            file_at = _column(header, options.file_column, FILE_COLUMNS, "file", "csv_file_column", spec)
            label_at = _column(header, options.label_column, LABEL_COLUMNS, "label", "csv_label_column", spec)
            if file_at == label_at:
                raise TfpipeError(
                    f"{spec}: column {header[file_at]!r} cannot be both the file and the label column; "
                    "name them with --csv_file_column and --csv_label_column"
                )
            rows = [
                (row[file_at].strip(), row[label_at].strip())
                for row in reader
                if len(row) > max(file_at, label_at) and row[file_at].strip()
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TfpipeError(f"{spec}: cannot read {path} as CSV ({error})") from None
    return _Table(path, image_dir, header[file_at], header[label_at], rows)


def _dialect(sample: str):
    try:
        return csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|")
    except csv.Error:  # one column, or an unusual header: commas
        return csv.excel


def _column(header: list[str], given: str | None, known: tuple[str, ...], role: str, flag: str, spec: str) -> int:
    lowered = [name.lower() for name in header]
    if given is not None:
        if given.lower() in lowered:
            return lowered.index(given.lower())
        raise TfpipeError(
            f"--{flag}={given!r} is not a column of {spec[len('--dataset=') :]} (columns: "
            f"{', '.join(header)}); give one of those"
        )
    for name in known:
        if name in lowered:
            return lowered.index(name)
    raise TfpipeError(
        f"{spec}: no column looks like the {role} column (columns: {', '.join(header)}; recognised names: "
        f"{', '.join(known)}); name it with --{flag}"
    )


def _sorted_labels(labels: set[str]) -> tuple[str, ...]:
    if all(label.lstrip("-").isdigit() for label in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


class _FileFinder:
    """Finds a row's file below the image folder: by relative path, then by name, with or
    without an image extension; a name that fits several files is ambiguous."""

    def __init__(self, image_dir: str, images: list[str]):
        self._image_dir = image_dir
        self._lookups = [collections.defaultdict(list) for _ in range(4)]
        for path in images:
            relative = file_index.relative(path, image_dir).replace(os.sep, "/")
            name = os.path.basename(relative)
            for lookup, key in zip(self._lookups, (relative, _stem(relative), name, _stem(name))):
                lookup[key].append(path)

    def find(self, written: str) -> tuple[str | None, str]:
        """(path, "") or (None, why not)."""
        name = written.replace("\\", "/").removeprefix("./")
        if os.path.isabs(name):
            name = os.path.relpath(name, self._image_dir).replace(os.sep, "/")
        keys = (name, name, os.path.basename(name), os.path.basename(name))
        for lookup, key in zip(self._lookups, keys):
            found = lookup.get(key, [])
            if len(found) == 1:
                return found[0], ""
            if len(found) > 1:
                return None, f"name several image files (such as {os.path.relpath(found[0], self._image_dir)})"
        return None, f"name no image file in {self._image_dir}"


def _stem(relative: str) -> str:
    root, extension = os.path.splitext(relative)
    return root if extension.lower() in folder.IMAGE_EXTENSIONS else relative
