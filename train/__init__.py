"""Workstation side: data loaders, the edge CNN, training and reports (needs TensorFlow).

Where things are: `data` (datasets), `model` (the network), `augment`, `fit`
(the training loop and the run folder), `distill` (teachers' targets),
`surgery` (`--init`: starting from another model's weights), `model_files`
(loading and saving models), `soup`, `runs`, `report`; `cli` is `fer-train`.

`fer_edge.train.data` is import-safe without TensorFlow (numpy + OpenCV only), so
the converter and tests can read datasets cheaply.

Importing this package turns on TensorFlow's oneDNN CPU kernels unless the user
chose otherwise (``TF_ENABLE_ONEDNN_OPTS``). TensorFlow enables them by default
only on some x86 CPUs; on an AMD EPYC (Zen 3) it left them off, and an epoch of
the edge CNN then took 2.98x as long (``python -m fer_edge.benchmarks.train_speed``
measures both side by side). The
variable is read when TensorFlow loads, so it is set here, before any module of
this package imports it.
"""

import os as _os

_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
