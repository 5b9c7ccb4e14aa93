"""Workstation side: data loaders, the edge CNN, training and reports (needs TensorFlow).

`fer_edge.train.data` is import-safe without TensorFlow (numpy + OpenCV only), so
the converter and tests can read datasets cheaply.
"""
