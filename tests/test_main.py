"""``python -m allegro_ref``: the MD run works with the shipped Cu model, a random model or a
weights file, reports drift and throughput; ``train`` reaches the training command line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from allegro_ref.__main__ import main
from allegro_ref.potential import Potential
from tests.models import tiny_config


def test_md_with_the_shipped_cu_model_by_default(capsys):
    assert main(["--atoms", "32", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "shipped model 'cu-emt'" in out and "random" not in out
    drift = float(re.search(r"energy drift: ([-+0-9.e]+) eV/atom", out).group(1))
    assert abs(drift) < 1e-4


def test_md_with_worker_processes_matches_one_process(capsys):
    """--processes 2 evaluates the chunks (two at 108 atoms) in two worker processes: the same
    trajectory."""
    energies = []
    for processes in ("1", "2"):
        assert main(["--atoms", "108", "--steps", "2", "--processes", processes]) == 0
        out = capsys.readouterr().out
        energies.append(re.search(r"energy drift: ([-+0-9.e]+) eV/atom", out).group(1))
    assert energies[0] == energies[1]


def test_md_with_a_random_model(capsys):
    assert main(["md", "--random", "--atoms", "4", "--steps", "3", "--timestep", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "random weights" in out
    assert "4 atoms" in out and "3 steps of 0.5 fs" in out
    drift = float(re.search(r"energy drift: ([-+0-9.e]+) eV/atom", out).group(1))
    assert abs(drift) < 1e-5
    assert re.search(r"throughput: \d+ atom·steps/s", out)


def test_md_is_the_default_command_and_loads_weights(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    Potential.from_config(
        tiny_config(type_names=["Cu"], avg_num_neighbors=14.0),
        seed=1,
    ).save(path)
    assert main(["--model", str(path), "--atoms", "4", "--steps", "2", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert f"potential: {path}" in out and "random weights" not in out


def test_train_command_reaches_the_training_cli(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "config" in capsys.readouterr().out.lower()


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        main(["md", "--dtype", "float16"])


def test_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "allegro_ref", "md", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--temperature" in done.stdout
