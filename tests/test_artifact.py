"""Artifact files: JSON + npz + SHA-256 manifest; every kind of damage is refused by name."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from qcbr.artifact import (
    MANIFEST,
    read_artifact,
    sha256_file,
    verify_manifest,
    write_artifact,
    write_manifest,
)
from qcbr.errors import ArtifactError


@pytest.fixture
def saved(tmp_path):
    meta = {"format": "test", "weights": [1.5, 2.25], "name": "m"}
    arrays = {"X": np.arange(12.0).reshape(3, 4), "ids": np.array(["a", "bb", "ccc"]),
              "codes": np.array([0, 1, 1], dtype=np.int64)}
    manifest = write_artifact(tmp_path, meta, arrays, extra_files={"model_card.md": b"# card\n"})
    return tmp_path, meta, arrays, manifest


def test_round_trip(saved):
    directory, meta, arrays, manifest = saved
    assert set(manifest["files"]) == {"model.json", "arrays.npz", "model_card.md"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(directory / name)
    meta2, arrays2 = read_artifact(directory)
    assert meta2 == meta
    assert set(arrays2) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(arrays2[k], arrays[k])
        assert arrays2[k].dtype == arrays[k].dtype


def test_flipped_byte_is_detected(saved):
    directory = saved[0]
    path = directory / "arrays.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"arrays\.npz does not match its SHA-256 .*tampered"):
        read_artifact(directory)


def test_truncated_file_is_detected(saved):
    directory = saved[0]
    path = directory / "model.json"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ArtifactError, match=r"model\.json has \d+ bytes but the manifest says \d+: .*truncated"):
        read_artifact(directory)


def test_extra_listed_file_is_checked_too(saved):
    directory = saved[0]
    (directory / "model_card.md").write_text("# edited\n")
    with pytest.raises(ArtifactError, match="model_card.md"):
        verify_manifest(directory)


def test_missing_pieces(saved, tmp_path_factory):
    directory = saved[0]
    (directory / "arrays.npz").unlink()
    with pytest.raises(ArtifactError, match=r"arrays\.npz is listed in the manifest but missing"):
        read_artifact(directory)
    (directory / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=r"MANIFEST\.json is missing"):
        read_artifact(directory)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_artifact(tmp_path_factory.mktemp("x") / "nope")


def test_manifest_damage(saved):
    directory = saved[0]
    manifest = json.loads((directory / MANIFEST).read_text())
    (directory / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_artifact(directory)
    bad = dict(manifest, files={**manifest["files"], "../etc/passwd": {"sha256": "0" * 64}})
    (directory / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="not a plain file name"):
        read_artifact(directory)
    partial = dict(manifest, files={"model.json": manifest["files"]["model.json"]})
    (directory / MANIFEST).write_text(json.dumps(partial))
    with pytest.raises(ArtifactError, match=r"does not list 'arrays\.npz'"):
        read_artifact(directory)
    (directory / MANIFEST).write_text(json.dumps(dict(manifest, version=99)))
    with pytest.raises(ArtifactError, match="manifest version 99"):
        read_artifact(directory)


def test_pickled_arrays_are_refused_even_with_a_matching_manifest(tmp_path):
    write_artifact(tmp_path, {"a": 1}, {"x": np.zeros(2)})
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"evil": 1}], dtype=object))  # needs pickle to load
    (tmp_path / "arrays.npz").write_bytes(buf.getvalue())
    write_manifest(tmp_path, ["model.json", "arrays.npz"])  # an attacker can re-hash too
    with pytest.raises(ArtifactError, match="needs pickle"):
        read_artifact(tmp_path)


def test_object_arrays_cannot_be_written(tmp_path):
    with pytest.raises(TypeError, match="dtype object"):
        write_artifact(tmp_path, {}, {"x": np.array(["a", 1], dtype=object)})


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_artifact(tmp_path, {"x": float("nan")}, {})


def test_extra_file_names_must_be_plain(tmp_path):
    with pytest.raises(ValueError, match="plain file name"):
        write_artifact(tmp_path, {}, {}, extra_files={"../x": b""})
    with pytest.raises(ValueError, match="clashes"):
        write_artifact(tmp_path, {}, {}, extra_files={"model.json": b"{}"})
