"""Side files the stages read back (data/prepared/meta.json, the splits, Inception statistics): valid files of
the wrong shape are one line naming the file and the key, exit 2, never a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.test_prepare import _one_line, prepare

runner = CliRunner()

BAD_META = {
    "a list": (b"[1, 2]", "expected a JSON object, got list"),
    "no image_size": (json.dumps({"content_hash": "ab", "channels": 1, "num_classes": 1, "class_names": ["x"]}),
                      "key 'image_size' missing"),
    "image_size a string": ({"image_size": "28"}, 'image_size must be a positive integer, got "28"'),
    "num_classes a bool": ({"num_classes": True}, "num_classes must be a positive integer, got true"),
    "content_hash empty": ({"content_hash": ""}, "content_hash must be a non-empty string"),
    "names short": ({"class_names": ["a", "b"]}, "class_names must be 10 strings (num_classes)"),
    "names not strings": ({"class_names": list(range(10))}, "class_names must be 10 strings"),
    "not utf-8": (b'{"source": "caf\xe9"}', "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_a_prepared_meta_json_of_the_wrong_shape_is_one_line_naming_it_and_the_key(tmp_path, idx_dir, case):
    res, out = prepare(tmp_path, {"source": "fashion-mnist", "path": str(idx_dir)})
    assert res.exit_code == 0, res.output
    bad, needle = BAD_META[case]
    if isinstance(bad, dict):
        bad = json.dumps({**json.loads((out / "meta.json").read_text()), **bad})
    (out / "meta.json").write_bytes(bad if isinstance(bad, bytes) else bad.encode())
    res = runner.invoke(app, ["judge", "--params", str(tmp_path / "params.yaml"), "--data", str(out),
                              "--model-out", str(tmp_path / "judge.pt"), "--metrics", str(tmp_path / "j.json")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    _one_line(res)
    assert "meta.json" in res.output and needle in res.output, res.output
    assert not (tmp_path / "judge.pt").exists()


def test_a_prepared_split_with_float_images_is_refused(tmp_path):
    from safetensors.numpy import save_file

    from ganops.data.prepared import load_split
    from ganops.errors import DataError

    save_file({"images": np.zeros((2, 1, 28, 28), np.float32), "labels": np.zeros(2, np.int64)},
              str(tmp_path / "train.safetensors"))
    with pytest.raises(DataError, match="train.safetensors: expected images uint8"):
        load_split(tmp_path, "train")


STATS_HEADERS = {
    "a list": ({"ganops": "[1]"}, "header must be a JSON object, got list"),
    "n missing": ({"ganops": json.dumps({"format": 1})}, "header n must be an integer >= 2, got None"),
    "n a string": ({"ganops": json.dumps({"format": 1, "n": "many"})}, "header n must be an integer >= 2"),
    "sigma not square": ({"ganops": json.dumps({"format": 1, "n": 5})}, "must be (D,) and (D, D)"),
}


@pytest.mark.parametrize("case", list(STATS_HEADERS))
def test_a_statistics_file_with_a_header_of_the_wrong_shape_is_one_clear_error(tmp_path, case):
    from safetensors.numpy import save_file

    from ganops.errors import GanopsError
    from ganops.metrics.fid import FeatureStats

    metadata, needle = STATS_HEADERS[case]
    path = tmp_path / "stats.safetensors"
    save_file({"mu": np.zeros(4), "sigma": np.zeros((4, 3))}, str(path), metadata=metadata)
    with pytest.raises(GanopsError) as e:
        FeatureStats.load(path)
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value), e.value
