"""The model server: protocols, hot swap, canary/shadow, micro-batching, capture, batch transform.

Importing this package is cheap (only `Deployment`); the server's parts import MLflow, pandas and
Starlette on first use of their own modules.
"""

from eventops.serving.deployment import Deployment

__all__ = ["Deployment"]
