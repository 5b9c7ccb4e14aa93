"""Workstation side: Keras model -> TFLite (float32 / float16 / dynamic-range / full int8),
the accuracy gate, and the deployment bundle."""
