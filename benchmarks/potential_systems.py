"""The systems and models of benchmarks/bench_potential.py: structures, the model of each system
(from ``allegro_ref.model.presets``), the official builder's arguments for it, and the files of
the official checkpoint and compiled model in benchmarks/.cache/.

Systems:
    cu       rattled (0.02 Å) cubic fcc Cu supercells, a = 3.61 Å, 42 edges per atom at r_max 5 Å;
             model ``presets.cu_benchmark(l_max)``: 1 species, r_max 5.0 Å, l_max 1/2/3, parity,
             2 layers, S = 64, U = 32, MLP widths 64/64/32, 8 Bessels, p = 6, N̄ = 42.
    ethanol  liquid-like ethanol (9 atoms per molecule, random orientations on a cubic grid of
             5 Å, periodic), variable numbers of neighbors; model ``presets.nequip_tutorial()``,
             the official tutorial config (l_max 1, S 64, U 32, all MLP widths 64, r_max 5.0 Å,
             species C H O).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # no install needed

from allegro_ref.model import AllegroConfig, presets  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
CU_SIZES = {256: (4, 4, 4), 1000: (5, 5, 10), 2048: (8, 8, 8), 16384: (16, 16, 16)}
CU_SIZES[131072] = (32, 32, 32)
DEFAULT_SIZES = {"cu": [256, 1000], "ethanol": [243, 1125]}
# The fields of an AllegroConfig that the official builder takes under the same name (the
# radial embedding is a nested dict there; everything else keeps the builder's defaults).
OFFICIAL_FIELDS = (
    "type_names",
    "r_max",
    "l_max",
    "parity",
    "num_layers",
    "num_scalar_features",
    "num_tensor_features",
    "scalar_embed_mlp_hidden_layers_width",
    "allegro_mlp_hidden_layers_width",
    "readout_mlp_hidden_layers_width",
    "avg_num_neighbors",
)


def structure(system: str, n_atoms: int):
    """The ``ase.Atoms`` of a benchmark row."""
    from ase.build import bulk, molecule

    if system == "cu":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(CU_SIZES[n_atoms])
        atoms.rattle(0.02, seed=0)
        return atoms
    # ethanol: n_atoms / 9 molecules, randomly rotated, on a cubic grid of 5 Å
    n_side = round((n_atoms / 9) ** (1 / 3))
    if 9 * n_side**3 != n_atoms:
        raise ValueError(f"ethanol rows need 9·n³ atoms (e.g. 243, 1125), got {n_atoms}")
    rng = np.random.default_rng(0)
    base = molecule("CH3CH2OH")
    base.positions -= base.positions.mean(axis=0)
    atoms = None
    for index in np.ndindex(n_side, n_side, n_side):
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        m = base.copy()
        m.positions = m.positions @ (q * np.sign(np.diag(r))).T + 5.0 * (np.array(index) + 0.5)
        atoms = m if atoms is None else atoms + m
    atoms.cell = np.eye(3) * 5.0 * n_side
    atoms.pbc = True
    return atoms


def model_config(system: str, lmax: int) -> AllegroConfig:
    """The model of ``system`` (``lmax`` only for cu)."""
    return presets.cu_benchmark(l_max=lmax) if system == "cu" else presets.nequip_tutorial()


def builder_kwargs(system: str, lmax: int, dtype: str) -> dict:
    """The official ``allegro.model.AllegroModel`` arguments of the model, seed 0."""
    config = model_config(system, lmax)
    kwargs = {name: getattr(config, name) for name in OFFICIAL_FIELDS}
    kwargs["type_names"] = list(config.type_names)
    embed = {
        "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
        "num_bessels": config.num_bessels,
        "bessel_trainable": config.bessel_trainable,
        "polynomial_cutoff_p": int(config.polynomial_cutoff_p),
    }
    return dict(kwargs, seed=0, model_dtype=dtype, radial_chemical_embed=embed)


def artifact(system: str, lmax: int, dtype: str, suffix: str) -> Path:
    """A file of the official model in benchmarks/.cache/: ``.ckpt`` (checkpoint) or
    ``.nequip.pt2`` (AOTInductor build)."""
    tag = f"{system}_l{lmax}" if system == "cu" else system
    return CACHE / f"allegro_{tag}_{dtype}{suffix}"


def allegro_ref_potential(system: str, lmax: int, dtype: str):
    """allegro_ref's ``Potential`` of the row: the official checkpoint's weights
    (``Potential.from_nequip``) where it was built, else the preset with allegro_ref's own
    seed-0 weights (the same shapes, hence the same cost; other energies)."""
    from allegro_ref.potential import Potential

    checkpoint = artifact(system, lmax, dtype, ".ckpt")
    if checkpoint.exists():
        return Potential.from_nequip(checkpoint)
    return Potential.from_config(model_config(system, lmax), seed=0, dtype=dtype)
