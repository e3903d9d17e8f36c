import json
import os

import pytest

from massl.io import atomic_path, atomic_write_json, provenance


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_failure_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_names_the_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OSError, match="cannot write .*ro/x.json"):
            atomic_write_json(folder / "x.json", {})
    finally:
        folder.chmod(0o700)


def test_provenance_records_versions_and_extra():
    record = provenance(seed=7)
    assert record["seed"] == 7
    assert record["packages"]["numpy"]
    assert "python" in record and "argv" in record
