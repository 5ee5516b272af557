"""ganops: a reproducible GAN factory (DVC stages over shared PyTorch modules)."""

import os

# Analytics pings would stall or fail on offline runners; set before the tools import.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

__version__ = "0.1.0"
