"""fer-edge: facial emotion recognition from workstation training to int8 TFLite on a Pi.

This top-level package is *the contract* both sides import: class names
(`labels`), face preprocessing (`preprocess`) and the deployment bundle format
(`bundle`). It depends on numpy and OpenCV only, so the device never needs
TensorFlow to feed the model exactly what training fed it.

The sides live in subpackages that map to the repository's top-level folders:
`fer_edge.train`, `fer_edge.convert`, `fer_edge.device`, `fer_edge.benchmarks`.
"""

__version__ = "0.1.0"
