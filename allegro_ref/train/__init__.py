"""Training Allegro models with exact, hand-written parameter gradients.

- ``data``: labelled structures (ASE files, ``ase.db``), splits, neighbour lists, batches;
- ``statistics``: average number of neighbours, per-type energy shifts, force RMS;
- ``loss``: energy + force (+ stress) loss and its gradient with respect to every parameter
  (force and stress terms by forward-over-reverse through the model's own backward);
- ``optim``: Adam, weight averaging (EMA), learning-rate schedule, early stopping;
- ``trainer``: the training loop, metrics, checkpoints; ``cli``: ``python -m allegro_ref train``;
- ``plots``: learning curve and parity plots.

See docs/training.md.
"""

from .config import TrainConfig
from .data import Batch, Graph, Structure, build_graph, collate, read_structures, split_structures
from .loss import LossResult, LossWeights, loss_and_gradient, predict
from .optim import Adam, EarlyStopping, ExponentialMovingAverage, ReduceLROnPlateau
from .trainer import Trainer, evaluate, train

__all__ = [
    "TrainConfig",
    "Structure",
    "Graph",
    "Batch",
    "read_structures",
    "split_structures",
    "build_graph",
    "collate",
    "LossWeights",
    "LossResult",
    "loss_and_gradient",
    "predict",
    "Adam",
    "ExponentialMovingAverage",
    "ReduceLROnPlateau",
    "EarlyStopping",
    "Trainer",
    "train",
    "evaluate",
]
