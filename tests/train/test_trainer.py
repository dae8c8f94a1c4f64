"""The training loop end to end on a tiny EMT data set: outputs, learning, exact resume from a
checkpoint, the YAML command line, statistics written into the model, and config errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from allegro_ref.potential import Potential
from allegro_ref.train import TrainConfig, Trainer
from allegro_ref.train.cli import main
from allegro_ref.train.data import read_structures

MODEL = dict(
    r_max=3.0,
    l_max=1,
    num_layers=1,
    num_scalar_features=4,
    num_tensor_features=2,
    scalar_embed_mlp_hidden_layers_width=4,
    allegro_mlp_hidden_layers_width=4,
    readout_mlp_hidden_layers_width=4,
)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """12 rattled, strained 4-atom fcc Cu cells labelled with EMT (energy, forces, stress)."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(12):
        atoms = bulk("Cu", "fcc", a=3.61 * rng.uniform(0.97, 1.03), cubic=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_stress()
        frames.append(atoms)
    path = tmp_path_factory.mktemp("data") / "cu.xyz"
    ase.io.write(path, frames)
    return path


def config(data_file, output_dir, **overrides) -> TrainConfig:
    settings = dict(
        model=MODEL,
        data_path=str(data_file),
        n_train=8,
        n_val=2,
        n_test=2,
        batch_size=3,
        max_epochs=3,
        lr=0.01,
        stress_weight=1.0,
        output_dir=str(output_dir),
        progress=False,
        plots=False,
    )
    settings.update(overrides)
    return TrainConfig.from_dict(settings)


def test_training_writes_outputs_and_learns(data_file, tmp_path):
    pytest.importorskip("matplotlib")  # the figures
    trainer = Trainer(config(data_file, tmp_path, max_epochs=4, plots=True))
    structures = read_structures(data_file)
    train_ids = {id(g.structure) for g in trainer.graphs["train"]}
    assert len(train_ids) == 8
    # statistics of the training split went into the model
    c = trainer.model_config
    train_structures = [g.structure for g in trainer.graphs["train"]]
    assert c.avg_num_neighbors == 12.0  # fcc, first shell only inside 3 Å
    forces = np.concatenate([s.forces for s in train_structures])
    assert c.per_type_energy_scales == pytest.approx(np.sqrt(np.mean(forces**2)))
    assert len(structures) == 12

    history = trainer.fit()
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and float(rows[-1]["val_forces_mae"]) == history[-1]["val_forces_mae"]
    results = json.loads((tmp_path / "test_metrics.json").read_text())
    assert results["epochs"] == 4 and set(results) >= {"val", "test"}
    best = min(history, key=lambda row: row["val_loss"])
    assert results["val"]["loss"] == pytest.approx(best["val_loss"], rel=1e-12)
    potential = Potential.load(tmp_path / "model.npz")
    assert potential.config == trainer.model_config
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert (tmp_path / "parity.png").stat().st_size > 0


def test_resume_continues_exactly(data_file, tmp_path):
    """2 epochs + resume for 1 more == 3 epochs in one go, bit for bit (weights, EMA, Adam,
    schedule, batch order)."""
    schedule = {"factor": 0.5, "patience": 0}
    straight = Trainer(config(data_file, tmp_path / "a", lr_schedule=schedule))
    straight.fit()
    interrupted = Trainer(config(data_file, tmp_path / "b", lr_schedule=schedule, max_epochs=2))
    interrupted.fit()
    resumed = Trainer.resume(tmp_path / "b" / "checkpoint.npz", max_epochs=3)
    assert resumed.epoch == 2
    resumed.fit()
    for name, value in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value)
        np.testing.assert_array_equal(resumed.ema.average[name], straight.ema.average[name])
    assert resumed.optimizer.lr == straight.optimizer.lr
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_time_s"} == {
            k: v for k, v in b.items() if k != "wall_time_s"
        }


def test_command_line(data_file, tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    settings = config(data_file, "run", max_epochs=1).to_dict()
    settings["output_dir"] = "run"  # relative to the YAML file's folder
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert main([str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test: energy MAE" in out and "force MAE" in out
    assert (tmp_path / "run" / "model.npz").exists()
    assert main([str(path), "--resume", "--max-epochs", "2", "--no-progress"]) == 0
    with open(tmp_path / "run" / "metrics.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_early_stopping_and_separate_files(data_file, tmp_path):
    import ase.io

    frames = ase.io.read(data_file, ":")
    ase.io.write(tmp_path / "train.xyz", frames[:6])
    ase.io.write(tmp_path / "val.xyz", frames[6:8])
    settings = config(data_file, tmp_path / "run", max_epochs=50, lr=0.0)
    settings = {**settings.to_dict(), "data_path": None, "n_train": None, "n_val": None}
    settings.update(train_path=str(tmp_path / "train.xyz"), val_path=str(tmp_path / "val.xyz"))
    settings.update(early_stopping={"patience": 2})
    trainer = Trainer(settings)
    trainer.fit()  # lr = 0: the validation loss never improves after epoch 1
    assert trainer.epoch == 3 and not trainer.graphs["test"]


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"batch_size": "5"}, "batch_size must be an integer, got '5'"),
        ({"max_epochs": 2.5}, "max_epochs must be an integer"),
        ({"n_train": True}, "n_train must be an integer, got True"),
        ({"lr": "1e-3"}, "lr must be a number, got '1e-3' \\(YAML reads"),
        ({"plots": "false"}, "plots must be true or false, got 'false'"),
        ({"dtype": 32}, "dtype must be a string"),
        ({"lr_schedule": [0.5, 5]}, "lr_schedule must be a mapping"),
    ],
)
def test_config_settings_of_the_wrong_type_are_named(setting, message):
    """A YAML file can hold anything: each setting's type is checked, with its name."""
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(
            {"model": MODEL, "data_path": "x", "n_train": 1, "n_val": 1, **setting}
        )


def test_config_errors(data_file, tmp_path):
    with pytest.raises(ValueError, match="r_max"):
        TrainConfig(model={}, data_path="x", n_train=1, n_val=1)
    with pytest.raises(ValueError, match="either data_path"):
        TrainConfig(model=MODEL, data_path="x", n_train=1, n_val=1, train_path="y")
    with pytest.raises(ValueError, match="needs n_train and n_val"):
        TrainConfig(model=MODEL, data_path="x")
    with pytest.raises(ValueError, match="unknown training settings \\['lr_max'\\]"):
        TrainConfig.from_dict({"model": MODEL, "data_path": "x", "lr_max": 1})
    with pytest.raises(ValueError, match="model.avg_num_neighbors: unknown setting 'mean'"):
        Trainer(config(data_file, tmp_path, model={**MODEL, "avg_num_neighbors": "mean"}))
    with pytest.raises(ValueError, match="has no forces"):
        import ase.io
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.2]])
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0)
        ase.io.write(tmp_path / "no_forces.xyz", [atoms] * 3)
        Trainer(config(tmp_path / "no_forces.xyz", tmp_path, n_train=2, n_val=1, n_test=0))


def test_fine_tuning_starts_from_a_saved_model(data_file, tmp_path):
    first = Trainer(config(data_file, tmp_path / "first", max_epochs=1))
    first.fit()
    saved = Potential.load(tmp_path / "first" / "model.npz")
    settings = config(data_file, tmp_path / "second", max_epochs=1).to_dict()
    settings.update(model={}, init_from=str(tmp_path / "first" / "model.npz"), lr=0.0)
    second = Trainer(settings)
    assert second.model_config == saved.config
    for name, value in saved.model.params.items():
        np.testing.assert_array_equal(second.model.params[name], value.astype(np.float64))
    second.fit()  # lr = 0: the weights (and so their average, to rounding) do not move
    np.testing.assert_array_equal(second.model.params["readout.0"], saved.model.params["readout.0"])
    np.testing.assert_allclose(
        second.ema.average["readout.0"], saved.model.params["readout.0"], rtol=1e-15
    )
    with pytest.raises(ValueError, match="brings its own model settings"):
        TrainConfig.from_dict({**settings, "model": MODEL})


def test_fit_applies_the_host_memory_policy_before_the_first_step(data_file, tmp_path, monkeypatch):
    """Training runs under the library's malloc policy (allegro_ref._execution) as the config
    says (keep_host_memory, default True): without it a bench_train step took 1.7x the CPU
    time."""
    from allegro_ref.train import trainer as trainer_module

    events = []
    monkeypatch.setattr(trainer_module, "tune_host_memory", events.append)
    real_step = trainer_module.loss_and_gradient

    def step(*args, **kwargs):
        events.append("step")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "loss_and_gradient", step)
    Trainer(config(data_file, tmp_path, max_epochs=1)).fit()
    assert events[:2] == [True, "step"] and events.count(True) == 1
    events.clear()
    Trainer(config(data_file, tmp_path / "b", max_epochs=1, keep_host_memory=False)).fit()
    assert events[:2] == [False, "step"]
