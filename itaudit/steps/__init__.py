"""Steps (pure units of work), the runner that owns storage, and executors that map steps over chunks."""

from .base import NoParams, Params, Resources, Step, StepContext

__all__ = ["NoParams", "Params", "Resources", "Step", "StepContext"]
