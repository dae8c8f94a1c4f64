"""The ``nequip`` marker: tests that run the official implementation (torch, nequip,
nequip-allegro) and skip cleanly where it is not installed."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "nequip: runs the official nequip-allegro model (skipped without torch/nequip)"
    )
