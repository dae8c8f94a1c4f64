r"""Strict locality of Allegro (Musaelian et al., Nat. Commun. 14, 579 (2023)), measured on
allegro_ref: the site energy $E_i$ depends on the positions of the atoms within $r_\text{max}$ of
atom $i$ and on no other, exactly.

    python benchmarks/claims_locality.py            # writes benchmarks/results/claims/locality.json
    python benchmarks/claims_locality.py --repeat 6 6 6 --centers 4

Model: the shipped ``cu-emt`` model (``Potential.pretrained("cu-emt")``: 2 layers, r_max 4.5 Å,
float64) on a rattled periodic fcc Cu cell (default 8 × 8 × 8 cubic cells, 2 048 atoms).

1. Gradients: one forward of the whole cell, then one backward per sampled center $i$ with the
   cotangent of the per-atom energies a one-hot on $i$; the edge gradients
   $\partial E_i/\partial r_e$ become $\partial E_i/\partial x_j$ for every atom $j$ through
   ``forces_from_edge_gradients`` (its sign flipped). Against the minimum-image distance
   $|r_{ij}|$: the largest $|\partial E_i/\partial x_j|$ beyond $r_\text{max}$ (it must be 0.0
   exactly, not small) and within it. A message-passing model with the same cutoff and $L$
   layers would have a receptive field of $L \cdot r_\text{max}$: the atoms inside both radii are
   counted.
2. Region energy: the atoms within ``--region`` Å of the cell's center are a region; every atom
   farther than $r_\text{max}$ + 0.5 Å from all of them is displaced (uniformly, up to 0.1 Å
   along each axis, so it stays beyond $r_\text{max}$); the region's energy
   $\sum_{i \in \text{region}} E_i$ must not change beyond rounding while the total does.
3. Spatial decomposition: the region's energy from a cut-out cluster (the region and the atoms
   within $r_\text{max}$ of it, no cell) against the full periodic cell's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import claims_common as common
from allegro_ref import Potential
from allegro_ref._derivatives import forces_from_edge_gradients
from allegro_ref.neighbors import edge_vectors, neighbor_list

MODEL = "cu-emt"
REPEAT = (8, 8, 8)  # 2 048 atoms
REGION_RADIUS = 5.0  # Å
MARGIN = 0.5  # Å: the moved atoms start beyond r_max + MARGIN of the region ...
STEP = 0.1  # Å: ... and move by at most STEP along each axis (|δ| ≤ 0.17 Å), staying beyond
KEEP_PAIRS_WITHIN = 2.2  # × r_max: the (distance, gradient) pairs kept for the plot


def mic_vectors(atoms, origins: np.ndarray) -> np.ndarray:
    """``[..., n, 3]`` minimum-image vectors from each of ``origins`` ``[..., 3]`` Å to every
    atom (orthorhombic periodic cells only)."""
    lengths = np.diag(atoms.cell.array)
    if not np.allclose(atoms.cell.array, np.diag(lengths)):
        raise ValueError("mic_vectors needs an orthorhombic cell")
    d = atoms.positions - origins[..., None, :]
    return d - lengths * np.round(d / lengths)


def site_energy_gradients(potential: Potential, atoms, sample: np.ndarray) -> np.ndarray:
    """``[len(sample), n, 3]`` eV/Å: $\\partial E_i / \\partial x_j$ for each sampled center $i$
    and every atom $j$, from one forward and one backward per center (one-hot cotangent)."""
    model, n = potential.model, len(atoms)
    centers, neighbors, shifts = neighbor_list(
        atoms.positions, atoms.cell.array, atoms.pbc, model.config.r_max
    )
    vectors = edge_vectors(atoms.positions, atoms.cell.array, centers, neighbors, shifts)
    types = np.zeros(n, dtype=np.int64)  # one species
    _, cache = model.forward(vectors, centers, neighbors, types)
    seeds = np.eye(n)[sample]  # one-hot cotangents, [len(sample), n]
    return np.stack(
        [-forces_from_edge_gradients(model.backward(cache, seed), centers, neighbors, n)
         for seed in seeds]
    )  # fmt: skip


def gradient_table(atoms, sample: np.ndarray, gradients: np.ndarray, r_max: float, layers: int):
    """For each sampled center: the largest $|\\partial E_i/\\partial x_j|$ beyond and within
    $r_\\text{max}$, the atoms within $r_\\text{max}$, with a nonzero gradient, and within
    ``layers`` × $r_\\text{max}$ (a message-passing model's receptive field)."""
    distances = np.linalg.norm(mic_vectors(atoms, atoms.positions[sample]), axis=2)
    norms = np.linalg.norm(gradients, axis=2)
    beyond = distances >= r_max
    kept = distances < KEEP_PAIRS_WITHIN * r_max
    return {
        "centers": sample.tolist(),
        "max_grad_beyond_r_max": float(np.where(beyond, norms, 0.0).max()),
        "max_grad_within_r_max": float(np.where(beyond, 0.0, norms).max()),
        "atoms_within_r_max": (~beyond).sum(axis=1).tolist(),  # the center itself included
        "atoms_with_nonzero_grad": (norms > 0).sum(axis=1).tolist(),
        "atoms_within_receptive_field_mp": (distances < layers * r_max).sum(axis=1).tolist(),
        "pairs": {  # for the plot: (|r_ij| Å, |∂E_i/∂x_j| eV/Å), j within KEEP_PAIRS_WITHIN r_max
            "distance": np.round(distances[kept], 4).tolist(),
            "grad": [float(f"{g:.4g}") for g in norms[kept]],
        },
    }


def region_masks(atoms, radius: float, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``[n]`` masks: the region (atoms within ``radius`` of the cell's center) and the
    far atoms (farther than ``r_max`` from every region atom, with ``r_max`` as given)."""
    center = atoms.cell.array.sum(axis=0) / 2
    region = np.linalg.norm(mic_vectors(atoms, center), axis=1) < radius
    from_region = np.linalg.norm(mic_vectors(atoms, atoms.positions[region]), axis=2)  # [R, n]
    return region, np.all(from_region >= r_max, axis=0)


def region_energy_test(potential: Potential, atoms, radius: float = REGION_RADIUS) -> dict:
    """The region's energy before and after the far atoms (beyond ``r_max`` + ``MARGIN`` of
    every region atom) move by up to ``STEP`` along each axis, and the total's change."""
    region, far = region_masks(atoms, radius, potential.config.r_max + MARGIN)
    before = potential.compute_atoms(atoms)
    moved = atoms.copy()
    rng = np.random.default_rng(1)
    moved.positions[far] += rng.uniform(-STEP, STEP, size=(int(far.sum()), 3))
    after = potential.compute_atoms(moved)
    e_before = float(before["energies"][region].sum())
    e_after = float(after["energies"][region].sum())
    return {
        "region_radius": radius,
        "region_atoms": int(region.sum()),
        "moved_atoms": int(far.sum()),
        "fixed_atoms": int((~far).sum()),
        "region_energy": e_before,
        "region_energy_change": e_after - e_before,
        "total_energy_change": after["energy"] - before["energy"],
        "cluster": cluster_test(potential, atoms, region, far, e_before),
    }


def cluster_test(potential, atoms, region, far, region_energy: float) -> dict:
    """The region's energy from a cut-out open cluster (the region and its halo: the atoms that
    are not ``far``, within r_max + ``MARGIN`` of it, at their minimum-image positions) against
    the periodic cell's."""
    center = atoms.cell.array.sum(axis=0) / 2
    kept = ~far
    positions = center + mic_vectors(atoms, center)[kept]
    symbols = np.array(atoms.get_chemical_symbols())[kept]
    energies = potential.compute(positions, list(symbols))["energies"]
    cluster_region = region[kept]
    energy = float(energies[cluster_region].sum())
    return {
        "cluster_atoms": int(kept.sum()),
        "region_energy": energy,
        "difference": energy - region_energy,
    }


def run(repeat=REPEAT, n_centers: int = 8, radius: float = REGION_RADIUS) -> dict:
    """All three tests on a ``repeat`` fcc Cu cell with the cu-emt model."""
    potential = common.one_core(Potential.pretrained(MODEL))
    config = potential.config
    atoms = common.fcc_copper(repeat, rattle=0.05)
    sample = np.random.default_rng(0).choice(len(atoms), n_centers, replace=False)
    gradients = site_energy_gradients(potential, atoms, sample)
    return {
        "model": MODEL,
        "atoms": len(atoms),
        "r_max": config.r_max,
        "num_layers": config.num_layers,
        "receptive_field_mp": config.num_layers * config.r_max,
        "gradients": gradient_table(atoms, sample, gradients, config.r_max, config.num_layers),
        "region": region_energy_test(potential, atoms, radius),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, nargs=3, default=list(REPEAT))
    parser.add_argument("--centers", type=int, default=8, help="sampled centers i")
    parser.add_argument("--region", type=float, default=REGION_RADIUS, help="region radius, Å")
    parser.add_argument("--json", type=Path, default=common.RESULTS / "locality.json")
    args = parser.parse_args()
    result = run(args.repeat, args.centers, args.region)
    table = result["gradients"]
    print(f"{result['atoms']} atoms, r_max {result['r_max']} Å, {result['num_layers']} layers")
    print(f"max |dE_i/dx_j| beyond r_max: {table['max_grad_beyond_r_max']!r} eV/Å")
    print(f"max |dE_i/dx_j| within r_max: {table['max_grad_within_r_max']:.3e} eV/Å")
    print(f"atoms within r_max {table['atoms_within_r_max']}")
    print(f"  nonzero gradient {table['atoms_with_nonzero_grad']}")
    print(f"  within {result['receptive_field_mp']} Å {table['atoms_within_receptive_field_mp']}")
    region = {k: v for k, v in result["region"].items()}
    print(f"region: {region}")
    print(f"wrote {common.write_result(args.json, result)}")


if __name__ == "__main__":
    main()
