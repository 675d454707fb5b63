"""Check labels: a few known labels that score a clustering of unlabelled images.

A run on the user's own unlabelled images can still report NMI and accuracy on
a small "check set": a CSV file (UTF-8, a byte-order mark is tolerated) of
two columns, an image and its label::

    file,label
    phone/2021-06/img_0001.png,cat
    phone/2021-06/img_0002.png,dog
    # lines starting with '#' and blank lines are skipped
    17,cat

The header row is optional; when there is one, its first cell is ``file``,
``path``, ``image``, ``row`` or ``index`` and its second ``label`` or ``class``
(any case). The image is either a row number, 0-based, into the training
images, or a file path relative to the image folder, with ``/`` or ``\\``
between folders and an optional leading ``./``. Sources that are not folders
have no file names, only row numbers. A label is any non-empty text; the
classes are the distinct labels, sorted. Cells are stripped of surrounding
whitespace. Every problem is refused with a `CheckLabelsError` that names the
file, and the line where one line is at fault.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_HEADERS = ("file", "path", "image", "row", "index")
LABEL_HEADERS = ("label", "class")


class CheckLabelsError(ValueError):
    """A check-label file that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays has no single truth value
class CheckLabels:
    """The check labels of the training images.

    Attributes:
        labels: int64 array of shape (num_images,): the class index of each
            image, -1 where an image has no check label.
        classes: the class names, sorted; label i means ``classes[i]``.
        path: the file the labels were read from.
    """

    labels: np.ndarray
    classes: tuple[str, ...]
    path: str

    @property
    def count(self) -> int:
        """The number of images that have a check label."""
        return int(np.count_nonzero(self.labels >= 0))

    def describe(self) -> str:
        """One line for the run's log, e.g. "212 check labels in 4 classes from labels.csv"."""
        return (
            f"{self.count} check labels in {len(self.classes)} classes from {Path(self.path).name}"
        )


def read_check_labels(
    path: str | Path, num_images: int, files: Sequence[str] | None = None
) -> CheckLabels:
    """Reads and validates a check-label file (the format is in the module docstring).

    Args:
        path: the CSV file.
        num_images: the number of training images.
        files: the source file of each training image, in row order, relative
            to the image folder with ``/``; None for sources that are not folders.

    Returns:
        The labels, classes and path.

    Raises:
        CheckLabelsError: the file is missing, unreadable or not valid, or its
            labels cannot score a clustering (one class, or every image labelled).
    """
    path = Path(path)

    def error(message: str, line: int | None = None) -> CheckLabelsError:
        return CheckLabelsError(
            f"{path}: {message}" if line is None else f"{path}: line {line}: {message}"
        )

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error("no such file; give the path of a CSV file of image,label rows") from None
    except IsADirectoryError:
        raise error("is a directory; give the path of a CSV file of image,label rows") from None
    except UnicodeDecodeError as decode:
        raise error(
            f"is not UTF-8 text (byte 0x{decode.object[decode.start]:02x} at offset "
            f"{decode.start}); save it as a UTF-8 CSV file"
        ) from None

    index_of = {name: i for i, name in enumerate(files)} if files is not None else {}
    assigned: dict[int, tuple[str, int]] = {}  # image -> (label, line that gave it)
    first_row = True
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        if first_row and len(cells) == 2 and cells[1].lower() in LABEL_HEADERS:
            first_row = False
            if cells[0].lower() in IMAGE_HEADERS:
                continue
            raise error(
                f"header {','.join(cells)!r} does not name the image column; the allowed "
                f"headers are {', '.join(IMAGE_HEADERS)} then {' or '.join(LABEL_HEADERS)} "
                "(or no header at all)",
                number,
            )
        first_row = False
        if len(cells) != 2:
            raise error(
                f"{len(cells)} cells; each row is image,label (quote a file name that has a comma)",
                number,
            )
        key, label = cells
        if not key or not label:
            raise error(f"empty {'image' if not key else 'label'}; each row is image,label", number)
        if re.fullmatch(r"-?\d+", key):
            image = int(key)
            if not 0 <= image < num_images:
                raise error(
                    f"row {image} is out of range: there are {num_images} training images, "
                    f"rows 0..{num_images - 1}",
                    number,
                )
        elif files is None:
            raise error(
                f"{key!r} is not a row number, and this data source has no file names; "
                f"use row numbers 0..{num_images - 1}",
                number,
            )
        else:
            name = key.replace("\\", "/").removeprefix("./")
            if name not in index_of:
                close = difflib.get_close_matches(name, index_of, n=3)
                hint = f"close matches: {', '.join(close)}" if close else "no close match"
                raise error(
                    f"{key!r} is not one of the {len(files)} training images (paths relative "
                    f"to the image folder, or row numbers 0..{num_images - 1}); {hint}",
                    number,
                )
            image = index_of[name]
        if image in assigned and assigned[image][0] != label:
            previous, previous_line = assigned[image]
            raise error(
                f"{key!r} is labelled {label!r} here and {previous!r} on line {previous_line}; "
                "give each image one label",
                number,
            )
        assigned.setdefault(image, (label, number))

    if not assigned:
        raise error("holds no check labels; add image,label rows or drop the check labels")
    classes = tuple(sorted({label for label, _ in assigned.values()}))
    if len(classes) < 2:
        raise error(
            f"only one class, {classes[0]!r}: a check set needs at least two classes to score "
            "a clustering; add images of another class"
        )
    if len(assigned) == num_images:
        raise error(
            f"labels for all {num_images} images: this is a labelled run; put the images in "
            "one sub-folder per class instead (or use a labelled source) and drop the check labels"
        )
    labels = np.full(num_images, -1, dtype=np.int64)
    class_index = {name: i for i, name in enumerate(classes)}
    for image, (label, _) in assigned.items():
        labels[image] = class_index[label]
    labels.flags.writeable = False  # the dataclass is frozen; so are its labels
    return CheckLabels(labels=labels, classes=classes, path=str(path))
