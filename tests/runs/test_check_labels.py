import re

import numpy as np
import pytest

from keras_deepcluster.runs.check_labels import CheckLabels, CheckLabelsError, read_check_labels

# Reading a CSV file: no Keras involved.
pytestmark = pytest.mark.backend_independent

FILES = [f"phone/2021-06/img_{i:04d}.png" for i in range(6)]


def write(tmp_path, text, name="labels.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def refused(path, pattern, line=None):
    """The pytest.raises context for an error that names the file (and line)."""
    where = re.escape(str(path)) + (f": line {line}: " if line is not None else ": ")
    return pytest.raises(CheckLabelsError, match=where + ".*" + pattern)


def test_header_and_file_names(tmp_path):
    path = write(
        tmp_path,
        "file,label\n"
        "phone/2021-06/img_0003.png,dog\n"
        "phone/2021-06/img_0000.png,cat\n"
        "phone/2021-06/img_0004.png, bird \n",
    )
    check = read_check_labels(path, 6, FILES)
    assert isinstance(check, CheckLabels)
    assert check.classes == ("bird", "cat", "dog")
    np.testing.assert_array_equal(check.labels, [1, -1, -1, 2, 0, -1])
    assert check.labels.dtype == np.int64
    assert check.count == 3
    assert check.path == str(path)


@pytest.mark.parametrize("header", ["Image,Class", "INDEX,label", "path , label", "row,class"])
def test_other_headers(tmp_path, header):
    path = write(tmp_path, f"{header}\n0,a\n1,b\n")
    assert read_check_labels(path, 3).classes == ("a", "b")


def test_row_numbers_without_header(tmp_path):
    path = write(tmp_path, "4,b\n0,a\n2,b\n")
    check = read_check_labels(path, 5)
    np.testing.assert_array_equal(check.labels, [0, -1, 1, -1, 1])
    assert check.classes == ("a", "b")


def test_row_numbers_and_file_names_mixed(tmp_path):
    path = write(tmp_path, "5,a\nphone/2021-06/img_0001.png,b\n")
    np.testing.assert_array_equal(read_check_labels(path, 6, FILES).labels, [-1, 1, -1, -1, -1, 0])


def test_backslashes_and_leading_dot_slash(tmp_path):
    path = write(tmp_path, "phone\\2021-06\\img_0002.png,a\n./phone/2021-06/img_0005.png,b\n")
    np.testing.assert_array_equal(read_check_labels(path, 6, FILES).labels, [-1, -1, 0, -1, -1, 1])


def test_comments_blank_lines_and_bom(tmp_path):
    text = "# made by hand\n\nfile,label\n  \n0,a\n   # not this one: 1,b\n\n2,b\r\n"
    path = write(tmp_path, text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    check = read_check_labels(path, 4)
    np.testing.assert_array_equal(check.labels, [0, -1, 1, -1])


def test_quoted_cells(tmp_path):
    path = write(tmp_path, '"0","a, with comma"\n1,b\n')
    assert read_check_labels(path, 3).classes == ("a, with comma", "b")


def test_same_label_twice_is_kept_once(tmp_path):
    path = write(tmp_path, "0,a\nphone/2021-06/img_0000.png,a\n1,b\n")
    check = read_check_labels(path, 6, FILES)
    assert check.count == 2
    np.testing.assert_array_equal(check.labels, [0, 1, -1, -1, -1, -1])


def test_describe(tmp_path):
    path = write(tmp_path, "0,cat\n1,dog\n2,cat\n3,fish\n", name="my labels.csv")
    assert (
        read_check_labels(path, 10).describe() == "4 check labels in 3 classes from my labels.csv"
    )


def test_labels_are_read_only(tmp_path):
    check = read_check_labels(write(tmp_path, "0,a\n1,b\n"), 3)
    with pytest.raises(ValueError):
        check.labels[2] = 0


def test_error_is_a_value_error():
    assert issubclass(CheckLabelsError, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    with refused(path, "no such file"):
        read_check_labels(path, 3)


def test_directory(tmp_path):
    with refused(tmp_path, "is a directory"):
        read_check_labels(tmp_path, 3)


def test_not_utf8(tmp_path):
    path = write(tmp_path, "0,chat\n1,caf\u00e9\n", encoding="latin-1")
    with refused(path, "not UTF-8.*save it as a UTF-8"):
        read_check_labels(path, 3)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "file,label\n"])
def test_empty(tmp_path, text):
    path = write(tmp_path, text)
    with refused(path, "holds no check labels"):
        read_check_labels(path, 3)


def test_header_that_does_not_match(tmp_path):
    path = write(tmp_path, "# comment\nfilename,label\n0,a\n")
    with refused(path, r"'filename,label'.*file, path, image, row, index", line=2):
        read_check_labels(path, 3)


@pytest.mark.parametrize(
    "text, message, line",
    [
        ("1,b\n0\n", "1 cells; each row is image,label", 2),
        ("1,b\n0,a,extra\n", "3 cells; each row is image,label", 2),
        ("file,label\n1,b\n ,a\n", "empty image", 3),
        ("file,label\n1,b\n0, \n", "empty label", 3),
        ("0,a\n3,b\n", r"out of range.*rows 0\.\.2", 2),
        ("0,a\n-1,b\n", r"out of range.*rows 0\.\.2", 2),
    ],
)
def test_a_bad_row_is_refused_with_its_line(tmp_path, text, message, line):
    path = write(tmp_path, text)
    with refused(path, message, line=line):
        read_check_labels(path, 3)


def test_unknown_file_with_close_matches(tmp_path):
    path = write(tmp_path, "phone/2021-06/img_0000.png,a\nphone/2021-06/img_001.png,b\n")
    with refused(path, r"not one of the 6 training images.*close matches: phone/", line=2):
        read_check_labels(path, 6, FILES)


def test_unknown_file_without_close_match(tmp_path):
    path = write(tmp_path, "0,a\nzzz.jpg,b\n")
    with refused(path, "'zzz.jpg' is not one of the 6 training images.*no close match", line=2):
        read_check_labels(path, 6, FILES)


def test_file_name_for_a_source_without_files(tmp_path):
    path = write(tmp_path, "0,a\nimg_0001.png,b\n")
    with refused(path, r"no file names; use row numbers 0\.\.9", line=2):
        read_check_labels(path, 10)


def test_conflicting_labels_name_both_lines(tmp_path):
    path = write(tmp_path, "file,label\nphone/2021-06/img_0002.png,cat\n1,dog\n2,dog\n")
    with refused(path, "'dog' here and 'cat' on line 2", line=4):
        read_check_labels(path, 6, FILES)


def test_one_class(tmp_path):
    path = write(tmp_path, "0,cat\n1,cat\n")
    with refused(path, "only one class, 'cat': a check set needs at least two classes"):
        read_check_labels(path, 5)


def test_every_image_labelled(tmp_path):
    path = write(tmp_path, "0,a\n1,b\n2,a\n")
    with refused(path, "labels for all 3 images: this is a labelled run.*sub-folder per class"):
        read_check_labels(path, 3)
