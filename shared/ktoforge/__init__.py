"""KTO Forge shared package: settings, schemas, job store, queue and dataset pipeline.

Every service imports this package; it imports no service and no heavy ML framework at import time.
"""

__version__ = "0.1.0"
