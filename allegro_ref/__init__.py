"""allegro_ref: a readable, exact and fast reference implementation of the Allegro potential.

What a user reaches for is here, under one import root:

- `Potential`: atoms in, energy, forces, stress out; `Potential.load` / `save` for weights files
  (`WeightFileError` for a file it cannot read), `Potential.pretrained(name)` for a shipped model
  (`Potential.available_pretrained()` lists them; also `allegro_ref.pretrained`);
- `AllegroCalculator`: a `Potential` as an ASE calculator (needs the `ase` extra);
- `AllegroConfig` / `AllegroModel`: today's Allegro (nequip-allegro 0.8.3), with `presets` of
  named configs; `Allegro2022Config` / `Allegro2022Model`: the paper's (nequip-allegro 0.3.0);
- `load_nequip`: a model trained with the official tools.

They are imported on first use: `import allegro_ref` itself imports nothing (no NumPy, no ASE),
and the calculator needs ASE only when it is asked for.

Layers (imports flow downward only): ``backend`` <- ``o3`` <- ``nn`` <- ``model`` <- ``io``
(official models) <- ``potential`` <- ``ase``, ``lammps``, ``train``, ``pretrained``; ``neighbors``
serves ``potential`` and everything above it.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

# public name -> (module relative to this package, attribute of it; None: the module itself)
_EXPORTS = {
    "Potential": ("potential", "Potential"),
    "WeightFileError": ("potential", "WeightFileError"),
    "AllegroCalculator": ("ase", "AllegroCalculator"),
    "AllegroConfig": ("model", "AllegroConfig"),
    "AllegroModel": ("model", "AllegroModel"),
    "Allegro2022Config": ("model", "Allegro2022Config"),
    "Allegro2022Model": ("model", "Allegro2022Model"),
    "load_nequip": ("io", "load_nequip"),
    "presets": ("model.presets", None),
    "pretrained": ("pretrained", None),
}

__all__ = [  # the keys of _EXPORTS (tests/test_init.py checks it) and the version
    "Allegro2022Config",
    "Allegro2022Model",
    "AllegroCalculator",
    "AllegroConfig",
    "AllegroModel",
    "Potential",
    "WeightFileError",
    "load_nequip",
    "presets",
    "pretrained",
    "__version__",
]


def __getattr__(name: str):
    """The public names, imported on first use: ``import allegro_ref`` stays light, and the ASE
    calculator needs the optional ``ase`` extra only when it is asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'allegro_ref' has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    module = _import_module(f".{module_name}", __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The public names too (tab completion), although they are not imported yet."""
    return sorted({*globals(), *__all__})
