"""Training patches: a random case, then a uniformly random crop (SPEC section 4).

Option `case_sampling`: `without_replacement` (default; the paper's "randomly sampled by the
same amount") walks a random permutation of the cases, one case per patch, and reshuffles when
it is used up, so every case is seen once per pass; `with_replacement` draws a uniformly random
case for every patch.

Option `foreground_fraction` (default 0 = the paper's uniform crop): that share of the samples
is forced to contain target voxels, nnU-Net style (2D: a slice with target; 3D: a crop around a
random target voxel). Cases without target fall back to the uniform crop.

Volumes are the memory-mapped arrays of a `CaseStore`; only the crop is read, so sampling costs
microseconds per patch however large the volumes are. All randomness comes from one
`numpy.random.Generator`; its state and the pass's permutation can be saved and restored for
an exact resume.
"""

from __future__ import annotations

import numpy as np

from massl.config import CHOICES
from massl.data.store import CaseStore
from massl.errors import ConfigError, DataError


class PatchSampler:
    """Batches of (image, label) patches from `case_ids` of `store`.

    3D: a (z, y, x) crop of `patch_size`. 2D: a uniformly random slice z, then a (y, x) crop.
    Along an axis shorter than the patch the whole extent is taken and placed at a uniformly
    random offset in the zero-filled patch (label 0 there).
    """

    def __init__(self, store: CaseStore, case_ids: list[str], patch_size: list[int], spatial_dims: int,
                 rng: np.random.Generator, foreground_fraction: float = 0.0,
                 case_sampling: str = "without_replacement"):
        if spatial_dims not in CHOICES["model"]["spatial_dims"]:
            raise ConfigError(f"model.spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(patch_size) != spatial_dims or min(int(p) for p in patch_size) < 1:
            raise ConfigError(f"training.patch_size must be {spatial_dims} positive integers for "
                              f"spatial_dims {spatial_dims}, got {list(patch_size)}")
        if not case_ids:
            raise ConfigError("no cases to sample patches from (empty labeled/unlabeled set)")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ConfigError(f"training.foreground_fraction must be in [0, 1], got {foreground_fraction}")
        if case_sampling not in CHOICES["training"]["case_sampling"]:
            raise ConfigError(f"training.case_sampling = {case_sampling!r} is not allowed; "
                              f"allowed: {', '.join(CHOICES['training']['case_sampling'])}")
        self.foreground_fraction = float(foreground_fraction)
        self.case_sampling = case_sampling
        self._order: list[int] = []  # without replacement: this pass's case order ...
        self._position = 0  # ... and how much of it is used
        self.case_ids = list(case_ids)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spatial_dims = spatial_dims
        self.rng = rng
        self._volumes = []
        for case_id in self.case_ids:
            image, label = store.image(case_id), store.label(case_id)
            if image.ndim != 3 or image.shape != label.shape:
                raise DataError(f"{store.folder}: case {case_id} image {image.shape} and label {label.shape} "
                                f"must be 3D (z, y, x) arrays of one shape")
            self._volumes.append((image, label))
        # target voxel coordinates per case, read once (only when oversampling is on)
        self._foreground = [np.argwhere(np.asarray(label) == 1) if self.foreground_fraction else None
                            for _, label in self._volumes]

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(images float32 (N, 1, *patch), labels uint8 (N, 1, *patch))."""
        images = np.zeros((batch_size, 1, *self.patch_size), np.float32)
        labels = np.zeros((batch_size, 1, *self.patch_size), np.uint8)
        for n in range(batch_size):
            index = self._next_case()
            image, label = self._volumes[index]
            # drawn only when oversampling is on, so the paper's sequence is unchanged without it
            voxel = self._foreground_voxel(index) if self.foreground_fraction else None
            if self.spatial_dims == 2:
                z = self.rng.integers(image.shape[0]) if voxel is None else voxel[0]
                image, label = image[z], label[z]
                voxel = None if voxel is None else voxel[1:]
            source, target = self._window(image.shape, voxel)
            images[(n, 0, *target)] = image[source]
            labels[(n, 0, *target)] = label[source]
        return images, labels

    def _next_case(self) -> int:
        if self.case_sampling == "with_replacement":
            return int(self.rng.integers(len(self._volumes)))
        if self._position == len(self._order):  # a new pass: reshuffle
            self._order, self._position = self.rng.permutation(len(self._volumes)).tolist(), 0
        self._position += 1
        return self._order[self._position - 1]

    def _foreground_voxel(self, index: int) -> np.ndarray | None:
        """A uniformly random target voxel of case `index` with probability `foreground_fraction`."""
        forced = self.rng.random() < self.foreground_fraction
        voxels = self._foreground[index]
        if not forced or not len(voxels):
            return None
        return voxels[self.rng.integers(len(voxels))]

    def _window(self, shape: tuple[int, ...], voxel=None) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Source and patch slices of a uniformly random crop; with `voxel`, of a uniformly random
        crop among those that contain it."""
        source, target = [], []
        for axis, (size, patch) in enumerate(zip(shape, self.patch_size)):
            if size >= patch:
                if voxel is None:
                    start = int(self.rng.integers(size - patch + 1))
                else:
                    low, high = max(0, int(voxel[axis]) - patch + 1), min(int(voxel[axis]), size - patch)
                    start = int(self.rng.integers(low, high + 1))
                source.append(slice(start, start + patch))
                target.append(slice(0, patch))
            else:
                offset = int(self.rng.integers(patch - size + 1))
                source.append(slice(0, size))
                target.append(slice(offset, offset + size))
        return tuple(source), tuple(target)

    def state(self) -> dict:
        """JSON-serialisable random state; `set_state` resumes the exact same patch sequence."""
        return {"bit_generator": self.rng.bit_generator.state, "order": list(self._order), "position": self._position}

    def set_state(self, state: dict) -> None:
        saved = state.get("bit_generator", {}) if isinstance(state, dict) else {}
        expected = self.rng.bit_generator.state["bit_generator"]
        if saved.get("bit_generator") != expected:
            raise DataError(f"sampler state is for bit generator {saved.get('bit_generator')!r}, "
                            f"this sampler uses {expected!r}")
        order, position = state.get("order"), state.get("position")
        if not (isinstance(order, list) and sorted(order) in ([], list(range(len(self._volumes))))
                and isinstance(position, int) and 0 <= position <= len(order)):
            raise DataError(f"sampler state has no valid case order for {len(self._volumes)} cases "
                            f"(order {order!r}, position {position!r}); it belongs to another sampler")
        self.rng.bit_generator.state = saved
        self._order, self._position = [int(i) for i in order], position
