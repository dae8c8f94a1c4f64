"""Training the 2022 family (``model: {family: allegro-2022, ...}``): the loss gradient of the
trainer's model against central finite differences, a short run that learns and saves a file
`Potential.load` reads back as the 2022 family, an exact resume, and the config's refusals.

The comparison with the official autograd (double backward through forces and stress) is
tests/train/test_official_gradients_2022.py.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from allegro_ref.model import Allegro2022Config, Allegro2022Model
from allegro_ref.potential import Potential
from allegro_ref.train import Trainer
from allegro_ref.train.data import collate
from allegro_ref.train.loss import LossWeights, loss_and_gradient
from tests.train.test_trainer import config, data_file  # noqa: F401 (a fixture)

MODEL_2022 = dict(
    family="allegro-2022",
    r_max=3.0,
    l_max=1,
    num_layers=2,
    num_tensor_features=2,
    num_bessels=4,
    two_body_latent_dims=[4, 4],
    latent_dims=[4],
    edge_eng_dims=[4],
)


def test_loss_gradient_matches_finite_differences(data_file, tmp_path):  # noqa: F811
    """dL/dθ · d of the trainer's model (statistics filled in, learnable ResNet coefficients)
    against a 4th-order central difference of L along one random direction d of all parameters
    at once, float64, with energy, force and stress terms."""
    model = {**MODEL_2022, "latent_resnet_coefficients_learnable": True}
    trainer = Trainer(config(data_file, tmp_path, model=model, max_epochs=0))
    assert isinstance(trainer.model, Allegro2022Model)
    batch = collate(trainer.graphs["train"][:3], like=trainer.model)
    weights = LossWeights(1.0, 2.0, 3.0)
    result = loss_and_gradient(trainer.model, batch, weights)
    assert set(result.gradients) == set(trainer.model.params)
    rng = np.random.default_rng(1)
    direction = {k: rng.standard_normal(v.shape) for k, v in trainer.model.params.items()}

    def loss_at(t: float) -> float:
        params = {k: v + t * direction[k] for k, v in trainer.model.params.items()}
        probe = Allegro2022Model(trainer.model_config, params, "float64")
        return loss_and_gradient(probe, batch, weights, gradient=False).loss

    h = 1e-4
    f = [loss_at(t * h) for t in (2, 1, -1, -2)]
    numeric = (8 * (f[1] - f[2]) - (f[0] - f[3])) / (12 * h)
    exact = sum(float(np.sum(g * direction[k])) for k, g in result.gradients.items())
    assert exact == pytest.approx(numeric, rel=1e-7)


def test_short_run_learns_and_saves_the_2022_family(data_file, tmp_path):  # noqa: F811
    trainer = Trainer(config(data_file, tmp_path, model=MODEL_2022, max_epochs=2))
    c = trainer.model_config
    assert isinstance(c, Allegro2022Config)
    assert c.avg_num_neighbors == 12.0  # fcc, first shell only inside 3 Å
    forces = np.concatenate([g.structure.forces for g in trainer.graphs["train"]])
    assert c.per_type_energy_scales == pytest.approx(np.sqrt(np.mean(forces**2)))
    # fixed ResNet coefficients and Bessel frequencies trainable (0.3.0's defaults)
    assert "latent_resnet_coefficients" not in trainer.optimizer.trainable
    assert "bessel_frequencies" in trainer.optimizer.trainable

    history = trainer.fit()
    assert len(history) == 2
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["val_loss"] < history[0]["val_loss"]
    with zipfile.ZipFile(tmp_path / "model.npz") as archive:
        metadata = np.load(archive.open("__metadata__.npy"))
    assert json.loads(str(metadata))["family"] == "allegro-2022"
    potential = Potential.load(tmp_path / "model.npz")
    assert isinstance(potential.model, Allegro2022Model)
    assert potential.config == c
    for name, value in trainer.ema.average.items():
        np.testing.assert_array_equal(potential.model.params[name], value)

    resumed = Trainer.resume(tmp_path / "checkpoint.npz", max_epochs=3)
    assert isinstance(resumed.model, Allegro2022Model) and resumed.epoch == 2
    resumed.fit()
    assert len(resumed.history) == 3


def test_fine_tuning_keeps_the_family(data_file, tmp_path):  # noqa: F811
    start = Allegro2022Model.init(
        Allegro2022Config(**{k: v for k, v in MODEL_2022.items() if k != "family"},
                          type_names=("Cu",))
    )  # fmt: skip
    Potential(start).save(tmp_path / "start.npz")
    trainer = Trainer(
        config(data_file, tmp_path / "run", model={}, init_from=str(tmp_path / "start.npz"))
    )
    assert isinstance(trainer.model, Allegro2022Model)
    assert trainer.model_config == start.config


@pytest.mark.parametrize(
    "model, message",
    [
        ({"family": "allegro-2019"}, "model.family must be one of"),
        ({**MODEL_2022, "avg_num_neighbors": "per_type"}, "per_type needs family allegro"),
        ({**MODEL_2022, "num_scalar_features": 4}, "unknown Allegro2022Config fields"),
    ],
)
def test_refusals(data_file, tmp_path, model, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        Trainer(config(data_file, tmp_path, model={"r_max": 3.0, **model}))


def test_statistics_are_stored_divided_by_the_global_scale(data_file, tmp_path):  # noqa: F811
    """E_i = g (shift + scale Ẽ_i): the stored scale is the force RMS over g."""
    plain = Trainer(config(data_file, tmp_path / "a", model=MODEL_2022, max_epochs=0))
    scaled_model = {**MODEL_2022, "global_energy_scale": 2.0}
    scaled = Trainer(config(data_file, tmp_path / "b", model=scaled_model, max_epochs=0))
    a, b = plain.model_config, scaled.model_config
    assert b.per_type_energy_scales == pytest.approx(a.per_type_energy_scales / 2)
    assert b.per_type_energy_shifts["Cu"] == pytest.approx(a.per_type_energy_shifts["Cu"] / 2)
