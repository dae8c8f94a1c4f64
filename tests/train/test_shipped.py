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


# The shipped models on their own held-out test structures (split as in their training
# configs), with bounds a little above the errors measured when they were trained.
MODEL_BOUNDS = {
    # name: (data set, n_train, n_val, n_test, energy MAE eV/atom, force MAE eV/Å)
    "ethanol-gfn2": ("ethanol-gfn2", 900, 50, 50, 1.5e-3, 0.025),
    "cu-emt": ("cu-emt", 540, 34, 34, 1.2e-3, 0.010),
}


@pytest.mark.parametrize("name", sorted(MODEL_BOUNDS))
def test_pretrained_models_are_small_and_accurate(name):
    from allegro_ref.train.data import build_graph, split_structures
    from allegro_ref.train.trainer import evaluate

    dataset, n_train, n_val, n_test, energy_bound, force_bound = MODEL_BOUNDS[name]
    assert pretrained.path(name).stat().st_size < MAX_BYTES
    potential = pretrained.load(name)
    assert potential.dtype == "float64"
    _, _, test = split_structures(read_structures(data.path(dataset)), n_train, n_val, n_test)
    c = potential.config
    graphs = [build_graph(s, c.type_names, c.r_max, c.cutoff_matrix()) for s in test]
    metrics = evaluate(potential.model, graphs, batch_size=25)
    assert metrics["energy_mae"] < energy_bound
    assert metrics["forces_mae"] < force_bound


def test_3bpa_set_has_the_frames_and_temperatures_its_docstring_says():
    """``3bpa-gfn2``: 550 frames at 300 K, then 150 at 600 K and 150 at 1200 K, all of one
    27-atom molecule C12H12N2O, labelled, and hotter frames spread wider in energy."""
    import ase.io

    frames = ase.io.read(data.path("3bpa-gfn2"), index=":")
    temperatures = [a.info["temperature_K"] for a in frames]
    assert temperatures == [300] * 550 + [600] * 150 + [1200] * 150
    assert {a.get_chemical_formula() for a in frames} == {"C12H12N2O"}
    energies = {t: [] for t in (300, 600, 1200)}
    for atoms, t in zip(frames, temperatures, strict=True):
        forces = atoms.get_forces()
        assert forces.shape == (27, 3) and np.all(np.isfinite(forces))
        assert not atoms.pbc.any()
        energies[t].append(atoms.get_potential_energy())
    spread = [np.std(energies[t]) for t in (300, 600, 1200)]
    assert spread[0] < spread[1] < spread[2]
