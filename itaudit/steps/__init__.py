"""Steps (pure units of work), the runner that owns storage, and executors that map steps over chunks."""

from .base import Frames, NoParams, Params, Resources, Step, StepContext

__all__ = ["Frames", "NoParams", "Params", "Resources", "Step", "StepContext"]
