"""Self-verifying checkpoint files and model.pt round trips (massl.model.files), the last/previous
resume chain and random-state capture (massl.training.checkpoint)."""

import logging
import random

import numpy as np
import pytest
import torch

from massl.errors import DataError
from massl.model.files import load_checkpoint, load_model, save_checkpoint, save_model
from massl.model.network import MASSLNet
from massl.training.checkpoint import load_resume_state, restore_rng_state, rng_state, save_resume_state

torch.set_num_threads(1)


def corrupt(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_round_trip_keeps_tensors_and_plain_values(tmp_path):
    state = {"weights": torch.arange(6.0).reshape(2, 3), "iteration": 7, "best": None,
             "rows": [{"loss": 0.5}], "rng": random.getstate()}
    save_checkpoint(tmp_path / "a.pt", state)
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(loaded["weights"], state["weights"])
    assert (loaded["iteration"], loaded["best"], loaded["rows"]) == (7, None, [{"loss": 0.5}])
    assert loaded["rng"] == state["rng"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_damaged_file_is_refused_with_its_name(tmp_path, damage):
    path = tmp_path / "a.pt"
    save_checkpoint(path, {"weights": torch.rand(1000)})
    if damage == "flip":
        corrupt(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-200])
    else:
        torch.save({"weights": torch.rand(3)}, path)  # a plain torch file has no checksum
    with pytest.raises(DataError, match="a.pt"):
        load_checkpoint(path)


def test_a_flipped_payload_byte_fails_the_checksum(tmp_path):
    # Flip a byte inside the stored tensor data and repair nothing else: only the digest can tell.
    path = tmp_path / "a.pt"
    weights = torch.zeros(4096)
    save_checkpoint(path, {"weights": weights})
    data = bytearray(path.read_bytes())
    start = data.find(bytes(4096 * 4))  # the zeros of the tensor, inside the payload bytes
    assert start > 0
    data[start + 100] = 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_checkpoint(path)


def test_resume_chain_keeps_the_last_two_and_falls_back(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    assert load_resume_state(folder) is None
    for iteration in (5, 10, 15):
        save_resume_state(folder, {"iteration": iteration})
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "previous.pt"]
    assert load_resume_state(folder)["iteration"] == 15
    corrupt(folder / "last.pt")
    with caplog.at_level(logging.WARNING):
        assert load_resume_state(folder)["iteration"] == 10
    assert "last.pt" in caplog.text and "previous.pt" in caplog.text
    corrupt(folder / "previous.pt")
    assert load_resume_state(folder) is None


def test_missing_last_falls_back_to_previous(tmp_path):
    # A crash between moving last.pt to previous.pt and writing the new last.pt.
    save_resume_state(tmp_path, {"iteration": 5})
    save_resume_state(tmp_path, {"iteration": 10})
    (tmp_path / "last.pt").unlink()
    assert load_resume_state(tmp_path)["iteration"] == 5


def draws(generator):
    return (random.random(), float(np.random.random()), float(torch.rand(1)),
            float(torch.rand(1, generator=generator)))


def test_rng_state_restores_every_stream(tmp_path):
    generator = torch.Generator().manual_seed(1)
    random.seed(2), np.random.seed(3), torch.manual_seed(4)
    draws(generator)
    save_checkpoint(tmp_path / "rng.pt", rng_state({"augment": generator}))
    expected = [draws(generator) for _ in range(3)]
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt"), {"augment": generator})
    assert [draws(generator) for _ in range(3)] == expected


def test_model_round_trip(tmp_path):
    torch.manual_seed(0)
    kwargs = {"spatial_dims": 2, "in_channels": 1, "channels": [4, 8], "downsample": "avgpool",
              "rec_channels": 2, "segmentation": True}
    model = MASSLNet(**kwargs)
    meta = {"dataset": "brats18", "method": "massl_alter", "rep": 1, "model_kwargs": kwargs}
    save_model(tmp_path / "model.pt", model, meta)
    loaded, loaded_meta = load_model(tmp_path / "model.pt")
    assert loaded_meta == meta
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            assert torch.equal(a, b)


def test_model_with_mismatched_description_is_refused(tmp_path):
    kwargs = {"spatial_dims": 2, "channels": [4, 8], "rec_channels": 0}
    save_model(tmp_path / "model.pt", MASSLNet(**kwargs), {"model_kwargs": {**kwargs, "channels": [4, 16]}})
    with pytest.raises(DataError, match="model.pt.*do not match"):
        load_model(tmp_path / "model.pt")


def test_a_resume_checkpoint_is_not_a_model(tmp_path):
    save_resume_state(tmp_path, {"iteration": 5, "model": {}})
    with pytest.raises(DataError, match="not a model file"):
        load_model(tmp_path / "last.pt")
