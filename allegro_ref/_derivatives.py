r"""Forces, per-atom virials and stress from the edge gradients $g_e = \partial E / \partial r_e$.

Allegro's energy depends on the positions only through the edge vectors
$r_e = x_j - x_i + S_e \cdot \text{cell}$ of the edges $e = (i \to j)$ (center $i$, neighbor $j$,
lattice shift $S_e$). One backward pass of the model gives $g_e = \partial E / \partial r_e$ for
every edge; everything else is the chain rule through $r_e$, written here once and used by
[`Potential`][allegro_ref.potential.Potential], the LAMMPS coupling, the training loss and
[`allegro_ref.io.compare`][allegro_ref.io.compare].

**Forces.** Since $\partial r_e / \partial x_j = -\partial r_e / \partial x_i = 1$ (times the
identity) for $e = (i \to j)$,

$$F_k = -\frac{\partial E}{\partial x_k}
      = \sum_{e:\ \text{center}\ k} g_e - \sum_{e:\ \text{neighbor}\ k} g_e .$$

**Stress** (ASE sign, eV/Å³). Strain the system homogeneously, $x \to x (1 + \varepsilon)$ and
$\text{cell} \to \text{cell} (1 + \varepsilon)$ (rows are vectors). Every edge vector follows,
$r_e \to r_e (1 + \varepsilon)$, so $\partial r_{e,a} / \partial \varepsilon_{bc}
= \delta_{ac} r_{e,b}$ and

$$\sigma = \frac{1}{V} \frac{\partial E}{\partial \varepsilon}
         = \frac{1}{V} \sum_e r_e \otimes g_e .$$

For a rotation-invariant energy the antisymmetric part of $\sum_e r_e \otimes g_e$ is zero
(it is the derivative along an infinitesimal rotation), so it is only rounding: the stress is
returned symmetrized, $\operatorname{sym}(A) = (A + A^T)/2$.

**Virials** (eV; the sign of nequip and LAMMPS, $W = -\partial E / \partial \varepsilon$). Each
edge's term is assigned to its center atom, which owns the edge's energy:

$$W_i = -\sum_{e:\ \text{center}\ i} r_e \otimes g_e, \qquad
  \sum_i W_i = -V \sigma \quad (\text{before symmetrization}).$$

The same segment sum over *structures* instead of atoms gives the virial of each structure of a
batch (``segments`` = the structure of each edge).

Every function takes arrays of any Array-API namespace (NumPy, CuPy, array-api-strict), on any
device, real or complex, and returns arrays of that namespace, dtype and device. Shapes: ``n_e``
edges, ``n`` atoms (or segments).
"""

from __future__ import annotations

from .backend import Array, namespace, scatter_sum

__all__ = ["forces_from_edge_gradients", "virials_from_edge_gradients", "stress_from_virial"]


def forces_from_edge_gradients(
    edge_gradients: Array, centers: Array, neighbors: Array, num_atoms: int
) -> Array:
    r"""$F_k = \sum_{e:\ \text{center}\ k} g_e - \sum_{e:\ \text{neighbor}\ k} g_e$, eV/Å.

    Args:
        edge_gradients: ``[n_e, 3]`` eV/Å, $g_e = \partial E / \partial r_e$.
        centers: ``[n_e]`` integers, the atom each edge's $+g_e$ goes to (its center $i$).
        neighbors: ``[n_e]`` integers, the atom each edge's $-g_e$ goes to (its neighbor $j$).
        num_atoms: ``n``, rows of the result.

    Returns:
        ``[n, 3]`` forces; atoms with no edge get zero. (A caller that must drop some of the
        terms, as the LAMMPS coupling does for edges seen by another domain, sends them to an
        extra row ``n`` and slices it off.)
    """
    return scatter_sum(edge_gradients, centers, num_atoms) - scatter_sum(
        edge_gradients, neighbors, num_atoms
    )


def virials_from_edge_gradients(
    edge_vectors: Array, edge_gradients: Array, segments: Array, num_segments: int
) -> Array:
    r"""$W_s = -\sum_{e \in s} r_e \otimes g_e$, eV: per-atom virials (``segments`` = the edges'
    centers) or per-structure virials of a batch (``segments`` = the edges' structures).

    Args:
        edge_vectors: ``[n_e, 3]`` Å, $r_e$.
        edge_gradients: ``[n_e, 3]`` eV/Å, $g_e$.
        segments: ``[n_e]`` integers in ``[0, num_segments)``.
        num_segments: rows of the result.

    Returns:
        ``[num_segments, 3, 3]``, ``W[s, a, b] = -Σ_{e in s} r_e[a] g_e[b]`` (not symmetrized).
    """
    edge_terms = edge_vectors[:, :, None] * edge_gradients[:, None, :]  # r_e ⊗ g_e, [n_e, 3, 3]
    return -scatter_sum(edge_terms, segments, num_segments)


def stress_from_virial(virial: Array, volume: Array | float) -> Array:
    r"""$\sigma = \operatorname{sym}(-W / V)$, eV/Å³ (ASE sign): the stress of one structure
    (``virial`` ``[3, 3]``, ``volume`` a number) or of each structure of a batch (``[B, 3, 3]``
    and ``[B]``).

    Args:
        virial: ``[..., 3, 3]`` eV, $W = \sum_i W_i$.
        volume: Å³, a float or an array of shape ``virial.shape[:-2]`` (broadcast over the two
            Cartesian axes).

    Returns:
        ``[..., 3, 3]`` symmetric stress.
    """
    xp = namespace(virial)
    if not isinstance(volume, float | int):
        volume = volume[..., None, None]
    stress = -virial / volume
    axes = tuple(range(virial.ndim - 2)) + (virial.ndim - 1, virial.ndim - 2)
    return 0.5 * (stress + xp.permute_dims(stress, axes))
