"""Lightning callbacks, one per file, each named after its job; ``_target_`` names them here."""

from vae_latent.callbacks.epoch_grid import EpochGrid
from vae_latent.callbacks.explorer import Explorer
from vae_latent.callbacks.interpolation import ClassInterpolation
from vae_latent.callbacks.latent_manifold import LatentManifold
from vae_latent.callbacks.latent_metrics import LatentMetricsLog
from vae_latent.callbacks.latent_scatter import LatentScatter
from vae_latent.callbacks.latent_traversal import LatentTraversal
from vae_latent.callbacks.non_finite_guard import NonFiniteGuard
from vae_latent.callbacks.progress_bar import ProgressBar
from vae_latent.callbacks.projector import TensorBoardProjector
from vae_latent.callbacks.random_state import RandomState
from vae_latent.callbacks.run_checkpoint import RunCheckpoint
from vae_latent.callbacks.run_clock import RunClock
from vae_latent.callbacks.tested_codes import TestCodes
from vae_latent.callbacks.tested_metrics import TestMetrics
from vae_latent.callbacks.training_gif import TrainingGif

__all__ = [
    "ClassInterpolation",
    "EpochGrid",
    "Explorer",
    "LatentManifold",
    "LatentMetricsLog",
    "LatentScatter",
    "LatentTraversal",
    "NonFiniteGuard",
    "ProgressBar",
    "RandomState",
    "RunCheckpoint",
    "RunClock",
    "TensorBoardProjector",
    "TestCodes",
    "TestMetrics",
    "TrainingGif",
]
