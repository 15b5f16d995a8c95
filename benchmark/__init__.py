"""nlbench: a reproducibility benchmark harness for Non-local Neural Networks on semantic segmentation."""

__version__ = "0.1.0"
