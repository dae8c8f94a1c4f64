"""``AllegroCalculator``: a ``Potential`` as an ASE calculator.

Properties: ``energy`` and ``free_energy`` (the same number, eV), ``energies`` (per atom, eV),
``forces`` (eV/Å) and ``stress`` (eV/Å³, Voigt order xx, yy, zz, yz, xz, xy, ASE sign: positive
under tension). Stress exists only for cells periodic in all three directions; asking for it
otherwise raises ASE's ``PropertyNotImplementedError``. Results are cached by ASE's
``check_state`` (a new calculation runs when positions, numbers, cell or pbc change);
``reset()`` drops them.

Requires the ``ase`` extra (``pip install allegro_ref[ase]``).
"""

from __future__ import annotations

from typing import ClassVar

from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .potential import Potential

__all__ = ["AllegroCalculator"]


class AllegroCalculator(Calculator):
    """ASE calculator evaluating an Allegro ``Potential`` (network on the potential's backend;
    results returned to ASE as NumPy arrays).

    Examples:
        ```python
        from ase.build import bulk
        from allegro_ref import AllegroCalculator, Potential

        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.calc = AllegroCalculator(Potential.pretrained("cu-emt"))
        energy = atoms.get_potential_energy()  # eV
        forces = atoms.get_forces()  # [N, 3] eV/Å
        stress = atoms.get_stress()  # Voigt, eV/Å³ (ASE's sign)
        print(f"{energy / len(atoms):.4f} eV/atom", forces.shape, stress.shape)
        ```
    """

    implemented_properties: ClassVar[list[str]] = [
        "energy",
        "free_energy",
        "energies",
        "forces",
        "stress",
    ]

    def __init__(self, potential: Potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not all(self.atoms.pbc):
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; pbc is "
                f"{self.atoms.pbc.tolist()}"
            )
        out = self.potential.compute_atoms(self.atoms)
        self.results = {
            "energy": out["energy"],
            "free_energy": out["energy"],
            "energies": out["energies"],
            "forces": out["forces"],
        }
        if out["stress"] is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"])
