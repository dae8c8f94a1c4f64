"""`python -m allegro_ref`: the MD run works with the shipped Cu model, a random model or a
weights file, reports drift and throughput; `train` reaches the training command line. Bad
arguments end with exit status 2 and one line on standard error, failed runs with 1 and one line,
never a traceback unless `--debug` asks for it; every option's help shows its default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from allegro_ref.__main__ import main
from allegro_ref._cli import run_reporting_errors
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


ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "allegro_ref", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_runs_as_a_module_and_every_option_shows_its_default():
    done = run_module("md", "--help")
    assert done.returncode == 0 and "--temperature" in done.stdout
    help_text = " ".join(done.stdout.split())
    for option in ("--atoms", "--steps", "--temperature", "--timestep", "--model", "--dtype"):
        assert re.search(re.escape(option) + r" .*?\(default: [^)]+\)", help_text), option
    assert help_text.count("(default:") == 11  # every option but --help
    assert "``" not in done.stdout and "`" not in run_module("--help").stdout


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "-5"], "--steps: '-5' is not a positive integer"),
        (["--steps", "0"], "--steps: '0' is not a positive integer"),
        (["--atoms", "-5"], "--atoms: '-5' is not a positive integer"),
        (["--atoms", "100"], "100 is not one: the nearest are 32 and 108"),
        (["--atoms", "1000"], "the nearest are 864 and 1372"),
        (["--atoms", "10000000000"], "more than the 4000000 allowed"),
        (["--processes", "0"], "--processes: '0' is not a positive integer"),
        (["--temperature", "-100"], "--temperature: '-100' is not a finite number >= 0"),
        (["--temperature", "nan"], "is not a finite number >= 0"),
        (["--timestep", "0"], "--timestep: '0' is not a finite number > 0"),
        (["--seed", "-1"], "--seed: '-1' is not an integer >= 0"),
        (["--model", "no-such-model"], "no such file, and not a shipped model (cu-emt"),
        (["--model", "ethanol-gfn2"], "['H', 'C', 'O'], without Cu"),
        (["md", "--dtype", "float16"], "invalid choice: 'float16'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_md_arguments_exit_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("python -m allegro_ref") and message in line


def test_a_weights_file_without_cu_or_unreadable_is_refused(tmp_path, capsys):
    no_cu = tmp_path / "no_cu.npz"
    Potential.from_config(tiny_config(type_names=["O"], avg_num_neighbors=4.0)).save(no_cu)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"not a zip archive")
    for path, message in ((no_cu, "['O'], without Cu"), (damaged, str(damaged))):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", str(path), "--steps", "1"])
        assert exit_info.value.code == 2
        assert message in one_error_line(capsys.readouterr().err)


def test_cupy_backend_without_cupy_is_refused_up_front(monkeypatch, capsys):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["--backend", "cupy", "--steps", "1"])
    assert exit_info.value.code == 2
    assert "--backend cupy needs CuPy" in one_error_line(capsys.readouterr().err)


def test_a_failed_run_exits_1_with_one_line_unless_debug(capsys):
    def fail():
        raise ValueError("the neighbor list\nrefused the cell")

    assert run_reporting_errors(fail, prog="prog") == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == "prog: error: ValueError: the neighbor list refused the cell"
    with pytest.raises(ValueError, match="refused"):
        run_reporting_errors(fail, prog="prog", debug=True)

    def interrupted():
        raise KeyboardInterrupt

    assert run_reporting_errors(interrupted, prog="prog") == 130
    assert one_error_line(capsys.readouterr().err) == "prog: interrupted"


def test_bad_command_lines_print_no_traceback_in_a_real_process(tmp_path):
    """As a user sees it: exit status and one line of stderr, for md and train."""
    (tmp_path / "settings.yaml").write_text("model: {r_max: 4.0}\nbatch_size: x\n")
    (tmp_path / "garbage.xyz").write_text("this is not an xyz file\n")
    (tmp_path / "run.yaml").write_text(
        "model: {r_max: 4.0}\ndata_path: garbage.xyz\nn_train: 1\nn_val: 1\nplots: false\n"
    )
    cases = [
        (["--steps", "-5"], 2, "not a positive integer"),
        (["train", "missing.yaml"], 2, "config missing.yaml: no such file"),
        (["train", "settings.yaml"], 2, "setting batch_size must be an integer, got 'x'"),
        (["train", "run.yaml", "--no-progress"], 1, "python -m allegro_ref train: error: "),
    ]
    for args, status, message in cases:
        done = run_module(*args, cwd=tmp_path)
        assert done.returncode == status, (args, done.stderr)
        assert message in one_error_line(done.stderr), args
