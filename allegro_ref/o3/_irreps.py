# ruff: noqa: E741, E743  (l is the degree of a representation, as in every textbook)
"""Irreducible representations of O(3) and direct sums of them, with e3nn's semantics.

An irrep ``Irrep(l, p)`` of O(3) = SO(3) x {1, -1} is labelled by its degree ``l >= 0``
(dimension ``2l+1``) and its parity ``p = +1`` ("e", even) or ``-1`` ("o", odd): the inversion
``-I`` acts as ``p``. A feature vector is a direct sum of copies of irreps, described by
``Irreps("8x0e + 8x1o + 4x2e")``: 8 scalars, then 8 vectors (3 components each, contiguous),
then 4 even degree-2 tensors; ``dim = 8 + 24 + 20``. See docs/conventions.md.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from ..backend import Array, device, namespace
from ._wigner import _determinant, wigner_D

__all__ = ["Irrep", "MulIrrep", "Irreps"]

_PARITY_LETTERS = {"e": 1, "o": -1}
_IRREP_PATTERN = re.compile(r"(\d+)([eoy])")


class _EqualToItsString(tuple):
    """A tuple that also compares equal to any string its class parses to the same tuple
    (``Irrep("1o") == "1o"``); a string it cannot parse compares unequal. Hashes as the tuple."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = type(self)(other)
            except ValueError:
                return False
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = tuple.__hash__


class Irrep(_EqualToItsString):
    """An irrep of O(3): degree ``l`` and parity ``p``, a frozen, hashable ``(l, p)`` tuple.

    ``Irrep(1, -1) == Irrep("1o")``. The letter "y" means the parity of the spherical harmonics,
    ``(-1)^l`` ("1y" is "1o", "2y" is "2e"). Irreps sort like the tuples ``(l, p)`` (as in
    e3nn): ``0o < 0e < 1o < 1e < 2o < ...``. An Irrep also compares equal to its string
    (``Irrep("1o") == "1o"``), but hashes as the tuple: use Irrep objects as dict keys.
    """

    def __new__(cls, l: int | str | tuple | Irrep, p: int | None = None) -> Irrep:
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, str):
                l, p = _parse_irrep(l)
            elif isinstance(l, tuple) and len(l) == 2:
                l, p = l
            else:
                raise ValueError(f"cannot interpret {l!r} as an irrep; use Irrep(l, p) or '1o'")
        if isinstance(l, bool) or not isinstance(l, int) or l < 0:
            raise ValueError(f"the degree l of an irrep must be a non-negative int, got {l!r}")
        if p not in (1, -1):
            raise ValueError(f"the parity p of an irrep must be +1 or -1, got {p!r}")
        return super().__new__(cls, (l, int(p)))

    @property
    def l(self) -> int:
        """The degree, ``l = 0, 1, 2, ...``."""
        return self[0]

    @property
    def p(self) -> int:
        """The parity, ``+1`` (even, "e") or ``-1`` (odd, "o")."""
        return self[1]

    @property
    def dim(self) -> int:
        """``2 l + 1``."""
        return 2 * self.l + 1

    def __str__(self) -> str:
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    def __repr__(self) -> str:
        return f"Irrep('{self}')"

    def __mul__(self, other: Irrep | str) -> Iterator[Irrep]:
        """The irreps in the tensor product ``self (x) other``: ``l = |l1 - l2| .. l1 + l2``, each
        once, with parity ``p1 p2`` (a generator, as in e3nn).

        This is the selection rule of the whole library: ``ir_out in ir1 * ir2`` decides whether
        a path ``ir1 (x) ir2 -> ir_out`` exists (tensor-product paths, the model's irreps)."""
        other = Irrep(other)
        parity = self.p * other.p
        return (Irrep(l, parity) for l in range(abs(self.l - other.l), self.l + other.l + 1))

    def __rmul__(self, mul: int) -> Irreps:
        """``3 * Irrep("1o")`` is ``Irreps("3x1o")``."""
        if isinstance(mul, bool) or not isinstance(mul, int):
            return NotImplemented
        return Irreps([(mul, self)])

    def __add__(self, other: Any) -> Irreps:
        return Irreps(self) + Irreps(other)

    def D_from_matrix(self, matrix: Array) -> Array:
        r"""The representation matrix ``[..., 2l+1, 2l+1]`` of elements of O(3) ``[..., 3, 3]``.

        An element of O(3) is ``R = d R'`` with ``d = det R = +-1`` and ``R'`` a proper rotation;
        the inversion acts as ``p``, so ``D_{l,p}(R) = p^{(1-d)/2} D_l(d R)``, with ``D_l`` the
        Wigner D matrix of ``wigner_D`` (any Array-API backend, dtype of ``matrix``).
        """
        xp = namespace(matrix)
        improper = _determinant(matrix) < 0
        one = xp.ones_like(improper, dtype=matrix.dtype)
        d = xp.where(improper, -one, one)[..., None, None]
        D = wigner_D(self.l, d * matrix)
        return D if self.p == 1 else d * D


def _parse_irrep(text: str) -> tuple[int, int]:
    match = _IRREP_PATTERN.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"cannot parse {text!r} as an irrep: expected a degree then a parity letter, like "
            f"'0e', '1o' or '2y'"
        )
    l = int(match.group(1))
    letter = match.group(2)
    return l, (-1) ** l if letter == "y" else _PARITY_LETTERS[letter]


class MulIrrep(NamedTuple):
    """``mul`` copies of the irrep ``ir``, e.g. ``MulIrrep(8, Irrep("1o"))``, printed ``8x1o``."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        """``mul * ir.dim``."""
        return self.mul * self.ir.dim

    def __str__(self) -> str:
        return f"{self.mul}x{self.ir}"


class SortedIrreps(NamedTuple):
    """Result of ``Irreps.sort()``: ``irreps`` sorted, entry ``i`` moved to position ``p[i]``,
    and ``inv[j]`` the original position of sorted entry ``j``."""

    irreps: Irreps
    p: tuple[int, ...]
    inv: tuple[int, ...]


class Irreps(_EqualToItsString):
    """A direct sum of irreps with multiplicities: a frozen tuple of ``MulIrrep``.

    Built from a string with e3nn's grammar, ``"8x0e + 8x1o + 4x2e"`` (entries separated by
    "+", ``MULxIRREP`` or just ``IRREP`` for multiplicity 1, whitespace ignored, multiplicity 0
    allowed, "" is empty), from an ``Irrep``, or from an iterable of ``MulIrrep``, ``(mul, ir)``
    pairs (``ir`` an Irrep, a string or an ``(l, p)`` tuple), Irreps or strings. The layout of a
    feature vector is the concatenation of the entries, each ``mul`` contiguous copies of its
    irrep (``[mul, 2l+1]`` flattened, e3nn's "mul_ir" layout).

    ``str`` gives e3nn's form "8x0e+8x1o+4x2e", which parses back to the same Irreps; an Irreps
    also compares equal to any string that parses to it.
    """

    def __new__(cls, irreps: Any = None) -> Irreps:
        if isinstance(irreps, Irreps):
            return irreps
        if irreps is None:
            entries: list[MulIrrep] = []
        elif isinstance(irreps, Irrep):
            entries = [MulIrrep(1, irreps)]
        elif isinstance(irreps, str):
            entries = _parse_irreps(irreps)
        elif isinstance(irreps, Iterable):
            entries = [entry for item in irreps for entry in _as_entries(item)]
        else:
            raise ValueError(f"cannot interpret {irreps!r} as Irreps")
        return super().__new__(cls, entries)

    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> Irreps:
        """The irreps of the spherical harmonics ``Y^0..Y^lmax``: ``1x0e+1x1o+1x2e+...`` for
        ``p = -1`` (parity ``(-1)^l``, the harmonics of a polar vector), all even for ``p = 1``."""
        if p not in (1, -1):
            raise ValueError(f"the parity p must be +1 or -1, got {p!r}")
        return Irreps([(1, (l, p**l)) for l in range(lmax + 1)])

    # ---- sizes -------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Length of a feature vector, ``sum mul (2l+1)``."""
        return sum(entry.dim for entry in self)

    @property
    def num_irreps(self) -> int:
        """Number of irreps counted with multiplicity, ``sum mul``."""
        return sum(entry.mul for entry in self)

    @property
    def ls(self) -> list[int]:
        """The degree of every irrep copy, in order (``mul`` times each ``l``)."""
        return [entry.ir.l for entry in self for _ in range(entry.mul)]

    @property
    def lmax(self) -> int:
        """The largest degree present, entries of multiplicity 0 not counted (as e3nn's
        ``max(ls)``); ValueError when no irrep is present."""
        if self.num_irreps == 0:
            raise ValueError(
                f"lmax of Irreps({str(self)!r}) is undefined: it is empty (no irrep of "
                f"multiplicity > 0)"
            )
        return max(entry.ir.l for entry in self if entry.mul > 0)

    def slices(self) -> list[slice]:
        """The slice of a feature vector occupied by each entry, in order."""
        stops = list(itertools.accumulate(entry.dim for entry in self))
        return [slice(stop - entry.dim, stop) for entry, stop in zip(self, stops, strict=True)]

    def count(self, ir: Irrep | str) -> int:
        """Total multiplicity of ``ir``."""
        ir = Irrep(ir)
        return sum(entry.mul for entry in self if entry.ir == ir)

    def __contains__(self, ir: object) -> bool:
        """``Irrep("1o") in irreps``: whether the irrep occurs (any multiplicity, even 0)."""
        return any(entry.ir == Irrep(ir) for entry in self)

    # ---- rearranging -------------------------------------------------------------------------

    def simplify(self) -> Irreps:
        """Merge consecutive entries of the same irrep and drop multiplicity-0 entries, without
        reordering: ``"1e + 1e + 0e + 0x2e + 1e"`` -> ``"2x1e+1x0e+1x1e"``."""
        out: list[MulIrrep] = []
        for mul, ir in self:
            if out and out[-1].ir == ir:
                out[-1] = MulIrrep(out[-1].mul + mul, ir)
            elif mul > 0:
                out.append(MulIrrep(mul, ir))
        return Irreps(out)

    def sort(self) -> SortedIrreps:
        """Stable sort of the entries by irrep (``Irrep`` order). Returns ``(irreps, p, inv)``:
        entry ``i`` of ``self`` is entry ``p[i]`` of ``irreps``, and ``inv = p^-1``
        (``irreps[j] == self[inv[j]]``)."""
        inv = tuple(sorted(range(len(self)), key=lambda i: (self[i].ir, i)))
        p = [0] * len(inv)
        for sorted_position, original in enumerate(inv):
            p[original] = sorted_position
        return SortedIrreps(Irreps([self[i] for i in inv]), tuple(p), inv)

    def regroup(self) -> Irreps:
        """``sort()`` then ``simplify()``: one entry per distinct irrep, in irrep order."""
        return self.sort().irreps.simplify()

    # ---- tuple protocol ----------------------------------------------------------------------

    def __getitem__(self, index: Any) -> Any:
        out = super().__getitem__(index)
        return Irreps(out) if isinstance(index, slice) else out

    def __add__(self, other: Any) -> Irreps:
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other: Any) -> Irreps:
        return Irreps(other) + self

    def __mul__(self, times: int) -> Irreps:
        """``Irreps("0e+1o") * 2`` is ``"0e+1o+0e+1o"`` (repetition, as in e3nn; not merged)."""
        if isinstance(times, bool) or not isinstance(times, int):
            return NotImplemented
        return Irreps(tuple(self) * times)

    __rmul__ = __mul__

    def __str__(self) -> str:
        return "+".join(str(entry) for entry in self)

    def __repr__(self) -> str:
        return f"Irreps('{self}')"

    # ---- representation ----------------------------------------------------------------------

    def D_from_matrix(self, matrix: Array) -> Array:
        """Block-diagonal representation matrix ``[..., dim, dim]`` of elements of O(3)
        ``[..., 3, 3]`` (proper or improper): one ``Irrep.D_from_matrix`` block per irrep copy,
        in the order of the feature layout."""
        xp = namespace(matrix)
        zeros = functools.partial(xp.zeros, dtype=matrix.dtype, device=device(matrix))
        blocks: dict[Irrep, Any] = {}
        for _, ir in self:
            if ir not in blocks:
                blocks[ir] = ir.D_from_matrix(matrix)
        batch = tuple(matrix.shape[:-2])
        rows = []
        offset = 0
        for mul, ir in self:
            for _ in range(mul):
                left = zeros((*batch, ir.dim, offset))
                right = zeros((*batch, ir.dim, self.dim - offset - ir.dim))
                rows.append(xp.concat([left, blocks[ir], right], axis=-1))
                offset += ir.dim
        if not rows:
            return zeros((*batch, 0, 0))
        return xp.concat(rows, axis=-2)


def _parse_irreps(text: str) -> list[MulIrrep]:
    if text.strip() == "":
        return []
    entries = []
    for token in text.split("+"):
        mul_text, _, ir_text = token.rpartition("x")
        try:
            mul = 1 if mul_text == "" and "x" not in token else int(mul_text)
            ir = Irrep(ir_text)
        except ValueError:
            raise ValueError(
                f"cannot parse {token.strip()!r} in Irreps string {text!r}: each '+'-separated "
                f"entry must be like '8x1o' or '1o'"
            ) from None
        if mul < 0:
            raise ValueError(f"negative multiplicity in {token.strip()!r} of Irreps {text!r}")
        entries.append(MulIrrep(mul, ir))
    return entries


def _as_entries(item: Any) -> list[MulIrrep]:
    """One item of a list given to ``Irreps(...)`` as its entries."""
    if isinstance(item, Irreps):
        return list(item)
    if isinstance(item, (str, Irrep)):
        return list(Irreps(item))
    if isinstance(item, tuple) and len(item) == 2:
        mul, ir = item
        if not isinstance(ir, (Irrep, str, tuple)):
            raise ValueError(f"cannot interpret {item!r} as a (multiplicity, irrep) pair")
        if isinstance(mul, bool) or not isinstance(mul, int) or mul < 0:
            raise ValueError(f"multiplicity must be a non-negative int, got {mul!r} in {item!r}")
        return [MulIrrep(mul, Irrep(ir))]
    raise ValueError(f"cannot interpret {item!r} as an entry of Irreps")
