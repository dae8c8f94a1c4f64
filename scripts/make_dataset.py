"""Generate the reference data sets of allegro_ref (deterministic; seconds to minutes).

    python scripts/make_dataset.py cu-rattled OUT.xyz [--frames 120 --seed 0]
    python scripts/make_dataset.py cu OUT.xyz.gz [--seed 0]
    OMP_NUM_THREADS=1 python scripts/make_dataset.py ethanol OUT.xyz.gz [--frames 1000]
    OMP_NUM_THREADS=1 python scripts/make_dataset.py 3bpa OUT.xyz.gz [--frames 550]

cu-rattled
    The official-trainer comparison set (benchmarks/bench_train.py): 2×2×2
    conventional fcc Cu cells (32 atoms), lattice constant 3.61 Å × U(0.97, 1.03), every atom
    displaced by N(0, σ²) with σ ~ U(0.02, 0.12) Å; labelled with ASE's EMT calculator
    (energy, forces, stress). About 1 s for 120 frames.
cu
    The training set of the shipped ``cu-emt`` model, meant for MD of bulk fcc Cu at
    300–1000 K and moderate strains: (a) 200 rattled cells as above but with a random
    symmetric strain (diagonal ±4 %, shear ±2 %) and σ up to 0.15 Å; (b) Langevin MD with EMT
    (2 fs, friction 0.02/fs) at 300, 600, 900 and 1200 K, each at three lattice constants
    (0.99, 1.0, 1.01 × 3.61 Å; the 1200 K run covers the hot tail of 1000 K MD), 34 frames
    per run 40 fs apart after 1 ps of equilibration; 608 frames, about 2 min.
ethanol
    A molecular set: Langevin MD of ethanol (ASE's g2 geometry) at 500 K, 0.5 fs steps,
    friction 0.01/fs, labelled with GFN2-xTB through ``tblite`` (pip install tblite), one frame
    every 10 steps after 500 steps of equilibration. ~5 ms per xTB call, so 1000 frames take
    about 1 min — but only with OMP_NUM_THREADS=1 (with more threads on a busy machine tblite
    is 10–40x slower). The cell is empty and pbc False (no stress).
3bpa
    The transferability set after Kovács et al., J. Chem. Theory Comput. 17, 7696 (2021):
    3-(benzyloxy)pyridin-2-amine, C12H12N2O (27 atoms). Starting geometry from SMILES by
    RDKit's ETKDG (random seed 0) and MMFF, relaxed with GFN2-xTB (BFGS, fmax 0.01 eV/Å);
    then one Langevin run per temperature from that minimum (0.5 fs steps, friction 0.01/fs,
    1000 steps of equilibration, one frame every 40 steps = 20 fs): ``--frames`` frames at
    300 K (training, validation and a test set) and 150 frames each at 600 K and 1200 K
    (test sets only). Every frame records its thermostat temperature in
    ``info["temperature_K"]``. GFN2-xTB through tblite, ~20 ms per call (OMP_NUM_THREADS=1),
    so the default 850 frames (about 37,000 MD steps) took 631 s of CPU (shipped set: tblite
    0.8.0, RDKit 2026.9.1, ASE 3.29). Needs RDKit.

Every frame is written as extended XYZ with energy (eV), forces (eV/Å) and, for periodic cells,
stress (eV/Å³, ASE sign). Needs ase (tblite for ethanol and 3bpa, RDKit for 3bpa); not
allegro_ref.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

LATTICE_CONSTANT = 3.61  # Å, fcc Cu (EMT's equilibrium is 3.59 Å)


def _labelled(atoms, calculator, with_stress: bool):
    """A copy of ``atoms`` with the calculator's energy, forces (and stress) frozen in a
    SinglePointCalculator."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = atoms.copy()
    atoms.calc = calculator
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if with_stress:
        results["stress"] = atoms.get_stress()
    frozen = atoms.copy()
    frozen.calc = SinglePointCalculator(frozen, **results)
    return frozen


def _fcc_cu(scale: float = 1.0, strain=None):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=LATTICE_CONSTANT * scale, cubic=True).repeat((2, 2, 2))
    if strain is not None:
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return atoms


def cu_rattled(frames: int, seed: int, max_sigma: float = 0.12, strain: float = 0.0):
    """Rattled (and, with ``strain`` > 0, randomly strained) Cu32 cells labelled with EMT."""
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    calculator = EMT()
    out = []
    for _ in range(frames):
        scale = rng.uniform(0.97, 1.03)
        deformation = None
        if strain > 0:
            diagonal = np.diag(rng.uniform(-strain, strain, 3))
            shear = rng.uniform(-strain / 2, strain / 2, (3, 3))
            deformation = diagonal + np.triu(shear, 1) + np.triu(shear, 1).T
        atoms = _fcc_cu(scale, deformation)
        sigma = rng.uniform(0.02, max_sigma)
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        out.append(_labelled(atoms, calculator, with_stress=True))
    return out


def _langevin(atoms, calculator, temperature, timestep_fs, friction, equilibrate, stride, n, rng):
    """Frames of Langevin MD: ``equilibrate`` steps, then one frame every ``stride`` steps."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    atoms = atoms.copy()
    atoms.calc = calculator
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature,
        friction=friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(equilibrate)
    frames = []
    for _ in range(n):
        dynamics.run(stride)
        snapshot = atoms.copy()
        snapshot.set_constraint()
        frames.append(snapshot)
    return frames


def cu_md_and_rattled(seed: int):
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = cu_rattled(200, seed, max_sigma=0.15, strain=0.04)
    calculator = EMT()
    for temperature in (300, 600, 900, 1200):
        for scale in (0.99, 1.0, 1.01):
            frames = _langevin(_fcc_cu(scale), calculator, temperature, 2.0, 0.02, 500, 20, 34, rng)
            out.extend(_labelled(f, calculator, with_stress=True) for f in frames)
    return out


def _gfn2_xtb():
    """A GFN2-xTB calculator (tblite), with a warning when OpenMP may oversubscribe."""
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("warning: set OMP_NUM_THREADS=1 (tblite is 10-40x slower otherwise)", file=sys.stderr)
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise SystemExit("the GFN2-xTB sets need tblite: pip install tblite") from error
    return TBLite(method="GFN2-xTB", verbosity=0)


def ethanol(frames: int, seed: int):
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    calculator = _gfn2_xtb()
    snapshots = _langevin(molecule("CH3CH2OH"), calculator, 500, 0.5, 0.01, 500, 10, frames, rng)
    return [_labelled(f, calculator, with_stress=False) for f in snapshots]


BPA3_SMILES = "Nc1ncccc1OCc1ccccc1"  # 3-(benzyloxy)pyridin-2-amine, C12H12N2O
BPA3_TEST_TEMPERATURES = (600, 1200)  # K, 150 frames each


def bpa3_minimum(calculator, seed: int = 0):
    """3BPA at its GFN2-xTB minimum near RDKit's ETKDG + MMFF conformer (random seed ``seed``)."""
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as error:
        raise SystemExit("the 3bpa set needs RDKit: pip install rdkit") from error
    from ase import Atoms
    from ase.optimize import BFGS

    molecule = Chem.AddHs(Chem.MolFromSmiles(BPA3_SMILES))
    if AllChem.EmbedMolecule(molecule, randomSeed=seed) != 0:
        raise RuntimeError("RDKit could not embed 3BPA")
    AllChem.MMFFOptimizeMolecule(molecule)
    symbols = [a.GetSymbol() for a in molecule.GetAtoms()]
    atoms = Atoms(symbols, positions=molecule.GetConformer().GetPositions())
    atoms.calc = calculator
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    atoms.calc = None
    return atoms


def bpa3(frames: int, seed: int):
    """Langevin MD of 3BPA at 300 K (``frames`` frames) and 600 K, 1200 K (150 each), every frame
    labelled with GFN2-xTB and tagged with ``info["temperature_K"]``."""
    rng = np.random.default_rng(seed)
    calculator = _gfn2_xtb()
    start = bpa3_minimum(calculator, seed)
    out = []
    for temperature, n in ((300, frames), *((t, 150) for t in BPA3_TEST_TEMPERATURES)):
        snapshots = _langevin(start, calculator, temperature, 0.5, 0.01, 1000, 40, n, rng)
        for snapshot in snapshots:
            frame = _labelled(snapshot, calculator, with_stress=False)
            frame.info["temperature_K"] = temperature
            out.append(frame)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["cu-rattled", "cu", "ethanol", "3bpa"])
    parser.add_argument("output", help="extxyz file (.xyz, or .xyz.gz compressed)")
    parser.add_argument(
        "--frames", type=int, default=None, help="cu-rattled 120, ethanol 1000, 3bpa 550 (at 300 K)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import ase.io

    start, cpu_start = time.perf_counter(), time.process_time()
    if args.kind == "cu-rattled":
        frames = cu_rattled(args.frames or 120, args.seed)
    elif args.kind == "cu":
        frames = cu_md_and_rattled(args.seed)
    elif args.kind == "ethanol":
        frames = ethanol(args.frames or 1000, args.seed)
    else:
        frames = bpa3(args.frames or 550, args.seed)
    ase.io.write(args.output, frames, format="extxyz")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"{len(frames)} frames -> {args.output} in {wall:.1f} s ({cpu:.1f} s CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
