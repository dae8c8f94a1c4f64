"""Initial weights: allegro_ref's `AllegroModel.init` against the official builder's, on the
bench_train configuration, distribution by distribution (issue 18).

    OMP_NUM_THREADS=1 python benchmarks/compare_init.py --official-python PYTHON [--seeds 64]
        [--workdir DIR]

For every seed 0 … n−1 the official builder (nequip 0.19.1 / nequip-allegro 0.8.3, run with
``--official-python``) draws a model, imported with ``allegro_ref.io.nequip`` (so both sides
are in allegro_ref's parameter names, with the same run-time normalization constants inside the
forward); allegro_ref draws ``AllegroModel.init(config, seed)``. Printed per parameter tensor:
mean and variance pooled over the seeds, and Kolmogorov–Smirnov p-values of each side against
the nominal law (U(−√3, √3) for linear and path weights, N(0, 1) for the type embeddings) and of
the two samples against each other. Then, on one batch (the first 5 training cells of
bench_train's split, float64, energy + force MSE 1 : 1, the training set's shift and scale):
the initial loss, its two terms and the gradient norm, mean ± standard error over the seeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # no install needed

from benchmarks.bench_train import make_split  # noqa: E402

EXPORT = """
import json, sys
import numpy as np
from nequip.utils.global_state import set_global_state
set_global_state()
import allegro.model
n, nbar, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
for seed in range(n):
    builder = dict(seed=seed, model_dtype="float32", type_names=["Cu"], r_max=4.5,
        radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                               "num_bessels": 8, "bessel_trainable": False,
                               "polynomial_cutoff_p": 6},
        l_max=1, parity=True, num_layers=2, num_scalar_features=32, num_tensor_features=8,
        scalar_embed_mlp_hidden_layers_width=32, allegro_mlp_hidden_layers_width=32,
        readout_mlp_hidden_layers_width=32, avg_num_neighbors=nbar,
        per_type_energy_shifts=0.0, per_type_energy_scales=1.0)
    model = allegro.model.AllegroModel(**builder)
    state = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    np.savez(f"{out}/seed{seed}.npz", builder=np.asarray(json.dumps(builder)),
             **{"state/" + k: v for k, v in state.items()})
"""


def official_params(workdir: Path, n: int, nbar: float, python: str):
    """(config, [params of seed 0 … n−1]) of the official builder, imported."""
    from allegro_ref.io.nequip import model_from_nequip

    out = workdir / "official_init"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-c", EXPORT, str(n), str(nbar), str(out)], check=True)
    models = []
    for seed in range(n):
        with np.load(out / f"seed{seed}.npz") as archive:
            builder = json.loads(str(archive["builder"]))
            state = {k[6:]: archive[k] for k in archive.files if k.startswith("state/")}
        models.append(model_from_nequip(builder, state))
    return models[0].config, [
        {k: np.asarray(v, float) for k, v in m.params.items()} for m in models
    ]


def distributions(ours: list[dict], official: list[dict]) -> None:
    """The per-tensor table of the module docstring."""
    from scipy import stats

    uniform = stats.uniform(-np.sqrt(3.0), 2 * np.sqrt(3.0)).cdf
    header = f"{'mean ref/off':>17s} {'var ref/off':>15s} {'KS p ref/off/2-sample':>22s}"
    print(f"{'parameter':22s} {header}")
    for name in official[0]:
        if name.startswith(("bessel", "per_type")):
            continue  # constants (frequencies 1..B; scales and shifts from the data)
        a = np.concatenate([p[name].ravel() for p in ours])
        b = np.concatenate([p[name].ravel() for p in official])
        law = stats.norm().cdf if name.endswith("_embed") else uniform
        p_values = (stats.kstest(a, law).pvalue, stats.kstest(b, law).pvalue)
        p_values += (stats.ks_2samp(a, b).pvalue,)
        print(
            f"{name:22s} {a.mean():8.4f} {b.mean():8.4f} {a.var():7.4f} {b.var():7.4f} "
            + " ".join(f"{p:6.3f}" for p in p_values)
        )


def initial_losses(config, sides: dict[str, list[dict]], paths: dict[str, str]) -> None:
    """Initial loss, its terms and |∂L/∂θ| on one batch, mean ± standard error per side."""
    from allegro_ref.model import AllegroModel
    from allegro_ref.model.config import AllegroConfig
    from allegro_ref.train.data import build_graph, collate, read_structures
    from allegro_ref.train.loss import LossWeights, loss_and_gradient
    from allegro_ref.train.statistics import force_rms, per_atom_energy_mean

    train = read_structures(paths["train"])
    shift, scale = per_atom_energy_mean(train), force_rms(train)
    config = AllegroConfig.from_dict(
        {**config.to_dict(), "per_type_energy_shifts": shift, "per_type_energy_scales": scale}
    )
    batch = collate([build_graph(s, ["Cu"], config.r_max) for s in train[:5]])
    print("initial loss on one batch (float64), mean ± s.e. over the seeds")
    for side, all_params in sides.items():
        rows = []
        for drawn in all_params:
            params = {**drawn, "per_type_energy_shifts": np.array([shift])}
            params["per_type_energy_scales"] = np.array([scale])
            result = loss_and_gradient(AllegroModel(config, params), batch, LossWeights(1, 1, 0))
            norm = np.sqrt(sum(float(np.sum(g * g)) for g in result.gradients.values()))
            terms = result.terms
            rows.append((result.loss, terms["energy_mse"], terms["forces_mse"], norm))
        mean, se = np.mean(rows, axis=0), np.std(rows, axis=0, ddof=1) / np.sqrt(len(rows))
        labels = ("loss", "energy MSE", "force MSE", "|grad|")
        print(
            f"  {side:9s} "
            + " | ".join(f"{k} {m:.4g} ± {s:.2g}" for k, m, s in zip(labels, mean, se, strict=True))
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official-python", required=True)
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--workdir", default="compare_init_run")
    args = parser.parse_args(argv)
    from allegro_ref.model import AllegroModel
    from allegro_ref.train.data import build_graph, read_structures
    from allegro_ref.train.statistics import average_num_neighbors

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    paths = make_split(workdir, 0)
    nbar = average_num_neighbors(
        [build_graph(s, ["Cu"], 4.5) for s in read_structures(paths["train"])]
    )
    config, official = official_params(workdir, args.seeds, nbar, args.official_python)
    ours = [
        {k: np.asarray(v, float) for k, v in AllegroModel.init(config, seed=s).params.items()}
        for s in range(args.seeds)
    ]
    distributions(ours, official)
    initial_losses(config, {"allegro_ref": ours, "official": official}, paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
