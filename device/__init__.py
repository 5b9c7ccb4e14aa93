"""Device side: capture, detect, classify, track and log, on a TFLite runtime only.

Nothing under `fer_edge.device` imports TensorFlow; the runtime module picks
ai-edge-litert, then tflite-runtime, and only then `tf.lite` if it happens to
be installed (a workstation).

Modules, in the order a frame meets them:

- `runtime`: pick the TFLite interpreter, wrap a model (`TFLiteModel`)
- `sources`: camera, picamera2, video, stream, images -> `Frame`; `open_source`
- `demo`: the built-in clip made from scikit-image's astronaut photo
- `detect`: BlazeFace (own anchors + NMS), Haar, YuNet -> `Detection`
- `classify`: `FacePreprocessor` (the contract's crop + encoder) and `EmotionClassifier`
- `track`: IoU tracks with EMA-smoothed probabilities -> `TrackedFace`
- `sinks`: draw stage, JSONL/CSV log, video, window, stdout
- `serve`: the live view (``--serve``): web page, MJPEG stream, JSON state and events (`web/` holds the page)
- `pipeline`: `Pipeline` wires the stages and times each one (`FrameResult.timings`)
- `info`: facts for ``fer-device info``; `cli`: the ``fer-device`` command
"""
