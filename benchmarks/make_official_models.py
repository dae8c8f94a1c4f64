"""(official stack) The official model of a benchmark row: a checkpoint with the official
builder's seed-0 weights, and its AOTInductor build, in benchmarks/.cache/. Run with the
interpreter of the official stack (torch 2.13, nequip 0.19.1, nequip-allegro 0.8.3);
bench_potential.py runs it when the files are missing.

    PYTHONPATH=. .venv-compare/bin/python benchmarks/make_official_models.py --system cu \
        --lmax 2 --dtypes float32 float64

Weights: ``allegro.model.AllegroModel(seed=0, ...)`` in the row's dtype (potential_systems.py:
the arguments of the model's preset), written as a Lightning checkpoint of an EMA training module
(nequip-train's format, from tests/fixtures/nequip_tiny.ckpt) and compiled with
``nequip-compile --mode aotinductor --device cpu --target ase``; allegro_ref imports that
checkpoint (``Potential.from_nequip``), so the three codes compute the same function.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import potential_systems as systems

TINY_CHECKPOINT = systems.ROOT / "tests" / "fixtures" / "nequip_tiny.ckpt"


def make_official(system: str, lmax: int, dtype: str) -> None:
    """(official stack) The checkpoint of the official model with the builder's seed-0 weights,
    and its AOTInductor build, in benchmarks/.cache/."""
    import torch
    from allegro.model import AllegroModel
    from nequip.utils.global_state import set_global_state

    set_global_state()
    kwargs = systems.builder_kwargs(system, lmax, dtype)
    model = AllegroModel(**kwargs)
    # A Lightning checkpoint of an EMA training module (nequip-train's format): the tiny
    # fixture's, with this model's config and weights (EMA weights = the weights).
    ckpt = torch.load(TINY_CHECKPOINT, map_location="cpu", weights_only=False)
    config = {"_target_": "allegro.model.AllegroModel", **copy.deepcopy(kwargs)}
    ckpt["hyper_parameters"]["model"] = config
    info = ckpt["hyper_parameters"]["info_dict"]
    info["training_module"]["model"] = copy.deepcopy(config)
    # compile traces the model on a frame of the checkpoint's data set (EMT copper, read as
    # the model's first type)
    dataset = info["data"]["split_dataset"]["dataset"]
    for transform in dataset["transforms"]:
        if transform["_target_"].endswith("NeighborListTransform"):
            transform["r_max"] = kwargs["r_max"]
            transform.pop("per_edge_type_cutoff", None)
            transform["type_names"] = kwargs["type_names"]
        else:
            transform["model_type_names"] = kwargs["type_names"]
            transform["chemical_species_to_atom_type_map"] = {"Cu": kwargs["type_names"][0]}
    state = {
        k: v
        for k, v in ckpt["state_dict"].items()
        if not k.startswith(("model.", "ema.ema_weight_"))
    }
    state.update({f"model.sole_model.{k}": v for k, v in model.state_dict().items()})
    for i, parameter in enumerate(model.parameters()):
        state[f"ema.ema_weight_{i}"] = parameter.detach().clone()
    ckpt["state_dict"] = state
    ckpt["optimizer_states"] = []
    systems.CACHE.mkdir(parents=True, exist_ok=True)
    path = systems.artifact(system, lmax, dtype, ".ckpt")
    torch.save(ckpt, path)
    compiled = systems.artifact(system, lmax, dtype, ".nequip.pt2")
    command = [str(Path(sys.executable).parent / "nequip-compile"), str(path), str(compiled)]
    command += ["--mode", "aotinductor", "--device", "cpu", "--target", "ase"]
    subprocess.run(command, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", choices=["cu", "ethanol"], default="cu")
    parser.add_argument("--lmax", type=int, choices=[1, 2, 3], default=2)
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    args = parser.parse_args()
    for dtype in args.dtypes:
        make_official(args.system, args.lmax, dtype)


if __name__ == "__main__":
    main()
