"""itaudit: audit instruction-tuning datasets and trace borrowed hallucinations."""

from .workspace import Workspace, open

__version__ = "0.1.0"
__all__ = ["Workspace", "open", "__version__"]
