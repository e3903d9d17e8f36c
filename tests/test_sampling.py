import json

import numpy as np
import pytest

from massl.data.sampling import PatchSampler
from massl.data.store import CASES_COLUMNS, CaseStore
from massl.errors import ConfigError, DataError


def coded_volume(shape, offset=0):
    """Every voxel encodes its own (z, y, x) so a crop can be located exactly."""
    z, y, x = np.indices(shape)
    return (offset + z * 10_000 + y * 100 + x + 1).astype(np.float32)


def write_store(folder, volumes):
    rows = ["\t".join(CASES_COLUMNS)]
    for case_id, image in volumes.items():
        np.save(folder / f"{case_id}.image.npy", image)
        np.save(folder / f"{case_id}.label.npy", (image.astype(np.int64) % 3).astype(np.uint8))
        (folder / f"{case_id}.json").write_text("{}")
        shape = "x".join(map(str, image.shape))
        rows.append("\t".join([case_id, "A", shape, "1x1x1", f"{case_id}.image.npy", f"{case_id}.label.npy",
                               f"{case_id}.json", "0"]))
    (folder / "cases.tsv").write_text("\n".join(rows) + "\n")
    return CaseStore(folder)


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path, {"big": coded_volume((6, 20, 24)), "other": coded_volume((6, 20, 24), 10**6)})


def locate(store, patch):
    """The case and (z, y, x) start of the crop whose first voxel is `patch`'s first voxel."""
    value = int(patch.flat[0])
    for case_id in store.case_ids:
        hits = np.argwhere(np.asarray(store.image(case_id)) == value)
        if len(hits):
            return case_id, tuple(hits[0])
    raise AssertionError(f"value {value} is in no volume")


def test_3d_patches_are_exact_crops(store):
    sampler = PatchSampler(store, store.case_ids, [4, 8, 10], 3, np.random.default_rng(0))
    images, labels = sampler.sample(6)
    assert images.shape == (6, 1, 4, 8, 10) and images.dtype == np.float32
    assert labels.shape == (6, 1, 4, 8, 10) and labels.dtype == np.uint8
    for image, label in zip(images[:, 0], labels[:, 0]):
        case_id, (z, y, x) = locate(store, image)
        np.testing.assert_array_equal(image, store.image(case_id)[z:z + 4, y:y + 8, x:x + 10])
        np.testing.assert_array_equal(label, store.label(case_id)[z:z + 4, y:y + 8, x:x + 10])


def test_2d_patches_are_single_slice_crops(store):
    sampler = PatchSampler(store, store.case_ids, [8, 10], 2, np.random.default_rng(1))
    images, labels = sampler.sample(5)
    assert images.shape == (5, 1, 8, 10) and labels.shape == (5, 1, 8, 10)
    for image, label in zip(images[:, 0], labels[:, 0]):
        case_id, (z, y, x) = locate(store, image)
        np.testing.assert_array_equal(image, store.image(case_id)[z, y:y + 8, x:x + 10])
        np.testing.assert_array_equal(label, store.label(case_id)[z, y:y + 8, x:x + 10])


def test_crops_cover_every_position_and_case(store):
    sampler = PatchSampler(store, store.case_ids, [6, 18, 24], 3, np.random.default_rng(2))
    starts = [locate(store, image) for image in sampler.sample(60)[0][:, 0]]
    seen = {(case_id, y) for case_id, (_, y, _) in starts}
    # y start can be 0, 1 or 2 (20 - 18 + 1 positions), in both cases; z and x fit exactly.
    assert seen == {(case, y) for case in ("big", "other") for y in (0, 1, 2)}


def test_small_volumes_are_zero_padded(tmp_path):
    store = write_store(tmp_path, {"small": coded_volume((3, 5, 4))})
    sampler = PatchSampler(store, ["small"], [4, 8, 8], 3, np.random.default_rng(3))
    images, labels = sampler.sample(4)
    volume = np.asarray(store.image("small"))
    for image, label in zip(images[:, 0], labels[:, 0]):
        inside = image > 0  # coded values start at 1, padding is 0
        assert inside.sum() == volume.size
        box = tuple(slice(idx.min(), idx.max() + 1) for idx in np.nonzero(inside))
        np.testing.assert_array_equal(image[box], volume)
        assert not label[~inside].any()


def test_same_rng_same_batches_and_resume(store):
    a = PatchSampler(store, store.case_ids, [8, 8], 2, np.random.default_rng(7))
    b = PatchSampler(store, store.case_ids, [8, 8], 2, np.random.default_rng(7))
    c = PatchSampler(store, store.case_ids, [8, 8], 2, np.random.default_rng(8))
    first_a, first_b = a.sample(4), b.sample(4)
    np.testing.assert_array_equal(first_a[0], first_b[0])
    assert not np.array_equal(first_a[0], c.sample(4)[0])

    saved = json.loads(json.dumps(a.state()))  # the state survives a JSON checkpoint
    expected = a.sample(3)
    a.sample(5)
    a.set_state(saved)
    resumed = a.sample(3)
    np.testing.assert_array_equal(resumed[0], expected[0])
    np.testing.assert_array_equal(resumed[1], expected[1])


def test_bad_arguments_are_reported(store, tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="patch_size"):
        PatchSampler(store, store.case_ids, [8, 8, 8], 2, rng)
    with pytest.raises(ConfigError, match="no cases"):
        PatchSampler(store, [], [8, 8], 2, rng)
    with pytest.raises(DataError, match="nope"):
        PatchSampler(store, ["nope"], [8, 8], 2, rng)
    sampler = PatchSampler(store, store.case_ids, [8, 8], 2, rng)
    with pytest.raises(DataError, match="bit generator"):
        sampler.set_state({"bit_generator": {"bit_generator": "MT19937"}})


@pytest.mark.parametrize("case_sampling", ["without_replacement", "with_replacement"])
@pytest.mark.parametrize("dims,patch", [(2, [8, 10]), (3, [4, 8, 10])])
def test_foreground_fraction_forces_target_into_the_patch(tmp_path, dims, patch, case_sampling):
    image = coded_volume((6, 20, 24))
    label = np.zeros(image.shape, np.uint8)
    label[4, 17, 3] = 1  # one target voxel near a corner
    store = write_store(tmp_path, {"case": image})
    np.save(tmp_path / "case.label.npy", label)
    store = CaseStore(tmp_path)
    forced = PatchSampler(store, store.case_ids, patch, dims, np.random.default_rng(0), foreground_fraction=1.0,
                          case_sampling=case_sampling)
    _, labels = forced.sample(16)
    assert all(labels[n].max() == 1 for n in range(16))
    uniform = PatchSampler(store, store.case_ids, patch, dims, np.random.default_rng(0), case_sampling=case_sampling)
    _, labels = uniform.sample(16)
    assert sum(labels[n].max() == 1 for n in range(16)) < 16
    with pytest.raises(ConfigError, match="foreground_fraction"):
        PatchSampler(store, store.case_ids, patch, dims, np.random.default_rng(0), foreground_fraction=1.5)


# Case sampling per pass ------------------------------------------------------------------------

@pytest.fixture
def five_cases(tmp_path):
    return write_store(tmp_path, {f"c{i}": coded_volume((2, 8, 8), i * 10**6) for i in range(5)})


def cases_drawn(store, sampler, sizes):
    return [locate(store, image)[0] for size in sizes for image in sampler.sample(size)[0][:, 0]]


def test_without_replacement_visits_every_case_once_per_pass(five_cases):
    sampler = PatchSampler(five_cases, five_cases.case_ids, [8, 8], 2, np.random.default_rng(0))
    cases = cases_drawn(five_cases, sampler, (3, 4, 8, 5))  # passes straddle batches
    passes = [tuple(cases[i:i + 5]) for i in range(0, 20, 5)]
    assert all(sorted(p) == five_cases.case_ids for p in passes)
    assert len(set(passes)) > 1  # reshuffled after each pass
    uniform = PatchSampler(five_cases, five_cases.case_ids, [8, 8], 2, np.random.default_rng(0),
                           case_sampling="with_replacement")
    cases = cases_drawn(five_cases, uniform, (20,))
    assert any(len(set(cases[i:i + 5])) < 5 for i in range(0, 20, 5))  # a case twice in some pass


def test_resume_in_the_middle_of_a_pass(five_cases):
    sampler = PatchSampler(five_cases, five_cases.case_ids, [8, 8], 2, np.random.default_rng(3))
    sampler.sample(2)
    saved = json.loads(json.dumps(sampler.state()))
    assert saved["position"] == 2 and sorted(saved["order"]) == list(range(5))
    expected = sampler.sample(7)
    sampler.sample(4)
    sampler.set_state(saved)
    np.testing.assert_array_equal(sampler.sample(7)[0], expected[0])
    with pytest.raises(DataError, match="case order"):
        sampler.set_state({**saved, "order": [0, 1, 2]})  # another sampler's (3 cases)
    with pytest.raises(ConfigError, match="case_sampling"):
        PatchSampler(five_cases, five_cases.case_ids, [8, 8], 2, np.random.default_rng(3), case_sampling="bootstrap")
