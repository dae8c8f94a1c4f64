"""AllegroCalculator: ASE's own finite-difference helpers as oracles for forces and stress,
the property set and Voigt order, caching through check_state, and energy conservation in NVE."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.verlet import VelocityVerlet

import allegro_ref
from allegro_ref.ase import AllegroCalculator
from allegro_ref.potential import Potential
from tests.models import tiny_config

try:  # ase >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta


@pytest.fixture(scope="module")
def potential() -> Potential:
    return Potential.from_config(tiny_config(), seed=7)


def triclinic_oxide() -> Atoms:
    """A small triclinic O/Cu cell (edges < r_max = 3.5 Å), rattled."""
    atoms = Atoms(
        "Cu2O",
        scaled_positions=[[0.0, 0.0, 0.0], [0.5, 0.5, 0.1], [0.25, 0.7, 0.6]],
        cell=[[3.1, 0.0, 0.0], [0.6, 2.9, 0.0], [-0.4, 0.3, 3.3]],
        pbc=True,
    )
    atoms.rattle(0.05, seed=1)
    return atoms


def cluster() -> Atoms:
    return Atoms(
        "OCuCuO",
        positions=[[0.0, 0.0, 0.0], [1.8, 0.1, 0.0], [0.2, 1.9, 0.3], [1.5, 1.6, 1.7]],
    )


def test_forces_match_numerical_forces(potential):
    for atoms in (triclinic_oxide(), cluster()):
        atoms.calc = AllegroCalculator(potential)
        forces = atoms.get_forces()
        numeric = calculate_numerical_forces(atoms, eps=1e-5)
        np.testing.assert_allclose(forces, numeric, rtol=0, atol=1e-7 * np.max(np.abs(forces)))


def test_stress_matches_numerical_stress(potential):
    atoms = triclinic_oxide()
    atoms.calc = AllegroCalculator(potential)
    stress = atoms.get_stress()  # Voigt
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    assert stress.shape == (6,)
    np.testing.assert_allclose(stress, numeric, rtol=0, atol=1e-7 * np.max(np.abs(stress)))


def test_properties_and_voigt_order(potential):
    atoms = triclinic_oxide()
    atoms.calc = AllegroCalculator(potential)
    ref = potential.compute_atoms(atoms)
    assert atoms.get_potential_energy() == ref["energy"]
    assert atoms.calc.get_property("free_energy") == ref["energy"]
    np.testing.assert_array_equal(atoms.get_potential_energies(), ref["energies"])
    np.testing.assert_array_equal(atoms.get_forces(), ref["forces"])
    s = ref["stress"]
    np.testing.assert_array_equal(
        atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
    )
    np.testing.assert_array_equal(atoms.get_stress(voigt=False), s)


@pytest.mark.parametrize("pbc", [False, [True, True, False]])
def test_no_stress_without_3d_periodicity(potential, pbc):
    atoms = triclinic_oxide()
    atoms.pbc = pbc
    atoms.calc = AllegroCalculator(potential)
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
        atoms.get_stress()


def test_results_are_cached_until_the_atoms_change(potential):
    calls = []

    class Counting(Potential):
        def compute_atoms(self, atoms):
            calls.append(1)
            return super().compute_atoms(atoms)

    atoms = cluster()
    atoms.calc = AllegroCalculator(Counting(potential.model))
    first = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energies()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.01
    assert atoms.get_potential_energy() != first
    assert len(calls) == 2
    atoms.calc.reset()
    atoms.get_forces()
    assert len(calls) == 3


def test_energy_is_conserved_in_nve(potential):
    """Velocity Verlet conserves the total energy to O(dt²): a small, bounded fluctuation and no
    drift. Wrong forces (a sign, a factor, a missing image) show up as a large drift."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.symbols[::3] = "O"
    atoms.rattle(0.05, seed=2)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.calc = AllegroCalculator(potential)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    totals = [atoms.get_total_energy()]
    for _ in range(40):
        dynamics.run(1)
        totals.append(atoms.get_total_energy())
    totals = np.asarray(totals) / len(atoms)
    kinetic = atoms.get_kinetic_energy() / len(atoms)
    assert kinetic > 1e-3  # the atoms do move
    assert np.max(np.abs(totals - totals[0])) < 1e-6  # measured 9e-9; 5 % force error: 6e-5


def test_lazy_export():
    assert allegro_ref.AllegroCalculator is AllegroCalculator
    assert allegro_ref.Potential is Potential
