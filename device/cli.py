"""``fer-device``: run emotion recognition on a camera, a file or a photo; report the device's facts.

    fer-device run --source demo --headless --log run.jsonl --save-video run.mp4
    fer-device run --source picamera2 --headless --log /var/log/fer/emotions.jsonl
    fer-device run --source photo.jpg --json
    fer-device info

The click layer stays thin: `run` validates its options, builds a source, a
`Pipeline` and the sinks, and hands over to `Pipeline.frames`. User errors
print as one ``error: ...`` line with exit code 2 (`fer_edge.cli_util.run_cli`).
SIGINT/SIGTERM finish the frame in hand, close the log and the video, print
the summary and exit 0. A camera or stream that stays lost past
``--reconnect-timeout`` ends the run the same orderly way but exits 3, so a
service manager (``Restart=on-failure``) starts it again.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any, Optional

import click

from fer_edge import __version__
from fer_edge.cli_util import quiet_native_logs, run_cli
from fer_edge.device.detect import (DEFAULT_OPTIONS, DETECTORS, YUNET_MAX_SIDE, YUNET_SCALE, default_options,
                                    resolve_detector)
from fer_edge.device.info import default_threads, device_facts, format_facts
from fer_edge.device.runtime import RUNTIMES
from fer_edge.errors import FerEdgeError

EXIT_SOURCE_LOST = 3
log = logging.getLogger("fer_edge.device")


def _say(message: str) -> None:
    """Status lines go to stderr, so stdout stays clean for ``--json`` results."""
    click.echo(f"fer-device: {message}", err=True)


def _defaults(field: str) -> str:
    """One detector option's default per detector, for --help (e.g. ``yunet 0.6, blazeface 0.6, haar 0.6``)."""
    return ", ".join(f"{kind} {getattr(DEFAULT_OPTIONS[kind], field)}" for kind in DETECTORS)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fer-device")
def cli() -> None:
    """Facial emotion recognition on the device (TFLite runtime, no TensorFlow)."""


@cli.command("run")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Bundle folder or .tar.gz, or a shipped bundle's name: ferplus (default) or fer2013.")
@click.option("--runtime", type=click.Choice([r[0] for r in RUNTIMES]), default=None,
              help="Force a TFLite runtime (default: first installed of litert, tflite-runtime, tensorflow).")
@click.option("--threads", type=click.IntRange(1, 64), default=None, help="Interpreter threads per model "
              "(default: usable cores, at most 4).")
@click.option("--source", default="auto", show_default=True,
              help="picamera2 | camera index or /dev/videoN | video file | image file or folder | stream URL | "
                   "demo | auto (picamera2 if installed, else camera 0).")
@click.option("--resolution", default=None, help="WIDTHxHEIGHT for cameras and the demo (default 640x480).")
@click.option("--lores", default=None, help="picamera2 detection stream WIDTHxHEIGHT (default: half of --resolution).")
@click.option("--fps", type=click.FloatRange(min=0.1), default=None,
              help="Camera frame rate to request; for files and the demo, play at this rate.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@click.option("--duration", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--loop", is_flag=True, help="Replay a video file, image folder or the demo until stopped.")
@click.option("--detector", type=click.Choice(("auto",) + DETECTORS), default="auto", show_default=True,
              help="Face detector: auto = the bundle's default (YuNet in the shipped bundle; BlazeFace in "
                   "bundles that ship only it), YuNet or BlazeFace from the bundle, or OpenCV's Haar cascade.")
@click.option("--detector-model", type=click.Path(path_type=Path), default=None,
              help="YuNet .onnx or BlazeFace .tflite instead of the bundle's, or a Haar cascade .xml.")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None,
              help=f"Face detection score threshold [default: {_defaults('min_confidence')}].")
@click.option("--min-face", type=click.IntRange(min=1), default=None,
              help=f"Smallest face side, in frame pixels [default: {_defaults('min_face')}].")
@click.option("--max-faces", type=click.IntRange(min=1), default=None,
              help=f"Most faces classified per frame, the highest-scoring ones [default: {_defaults('max_faces')}].")
@click.option("--smoothing", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5, show_default=True,
              help="Weight of the newest frame in each face's probability average.")
@click.option("--no-smooth", is_flag=True, help="Report each frame's own probabilities (no averaging).")
@click.option("--headless", is_flag=True, help="No window, even if a display exists.")
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=None,
              help="Append results to this file: JSON Lines, or CSV if it ends in .csv.")
@click.option("--log-format", type=click.Choice(["auto", "jsonl", "csv"]), default="auto", show_default=True,
              help="Log format; auto picks CSV for a .csv name, else JSON Lines.")
@click.option("--save-video", type=click.Path(path_type=Path), default=None, help="Write annotated video (.mp4/.avi).")
@click.option("--json", "as_json", is_flag=True, help="For photos: print results as JSON, one object per image.")
# Faces at room distance (issue 41): YuNet's detection scale; annotated copies of photos.
@click.option("--detect-scale", type=click.FloatRange(0.25, 4.0), default=None,
              help="YuNet only: run it on the frame enlarged (or shrunk) by this factor: 2 finds faces down to "
                   "~24 px (4 m), 1.5 to ~32 px at ~60% of the time, 1 to ~48 px at ~25% "
                   f"[default: {YUNET_SCALE}, at most {YUNET_MAX_SIDE} px long].")
@click.option("--save-images", type=click.Path(path_type=Path), default=None,
              help="For photos: write annotated copies into this folder (created if missing), same file names.")
@click.option("--reconnect-timeout", type=click.FloatRange(min=0.0), default=30.0, show_default=True,
              help="Seconds to keep retrying a camera or stream that stopped delivering frames.")
# Live view (issue 43): a web page with the annotated stream, the faces, a timeline and the figures.
@click.option("--serve", envvar="FER_EDGE_SERVE", show_envvar=True, default=None, metavar="[HOST:]PORT",
              help="Serve the live view at http://HOST:PORT/ while the run goes on (host 127.0.0.1 unless given; "
                   "0.0.0.0:8080 opens it to the network). See docs/live-view.md.")
@click.option("--serve-fps", type=click.FloatRange(0.5, 60.0), default=10.0, show_default=True,
              help="Most frames per second the stream sends (frames are JPEG-encoded only while someone watches).")
@click.option("--serve-token", envvar="FER_EDGE_SERVE_TOKEN", show_envvar=True, default=None,
              help="Access token every request to the live view must carry (?token=, a bearer header or the "
                   "cookie the page sets).")
@click.option("--serve-token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Read the access token from this file's first word instead.")
# --- MQTT (issue 44): publish to a broker, with Home Assistant discovery; see docs/mqtt.md ---
@click.option("--mqtt", "mqtt_url", metavar="URL", default=None,
              help="Publish results to this broker: mqtt://[user@]host[:port], or mqtts://... for TLS. The password "
                   "comes from $FER_EDGE_MQTT_PASSWORD or --mqtt-password-file. Needs: pip install 'fer-edge[mqtt]'.")
@click.option("--mqtt-topic", default=None, help="Topic prefix (default: fer-edge/<device id>).")
@click.option("--mqtt-device-id", default=None,
              help="Device id in topics and Home Assistant (default: from the host name).")
@click.option("--mqtt-interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between <prefix>/state messages at most; one is sent only when the state changed.")
@click.option("--mqtt-faces-rate", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="<prefix>/faces messages per second at most (0: none).")
@click.option("--mqtt-queue", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Messages kept while the broker is away; past this the oldest are dropped (and counted).")
@click.option("--mqtt-password-file", type=click.Path(path_type=Path), default=None,
              help="File holding the broker password (instead of $FER_EDGE_MQTT_PASSWORD).")
@click.option("--mqtt-ca", type=click.Path(path_type=Path), default=None,
              help="CA certificate (PEM) to check an mqtts:// broker with (default: the system's).")
@click.option("--mqtt-cert", type=click.Path(path_type=Path), default=None,
              help="Client certificate (PEM) for mqtts://.")
@click.option("--mqtt-key", type=click.Path(path_type=Path), default=None, help="Key of --mqtt-cert (PEM).")
@click.option("--no-ha-discovery", is_flag=True, help="Do not publish Home Assistant discovery configs.")
# Uncertain faces (issue 42): below this top probability a face is labelled "uncertain".
@click.option("--min-emotion-confidence", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Label a face 'uncertain' (on screen, in logs and summaries) when its top emotion probability "
                   "is below this; probabilities are still logged. The bundles' probabilities are calibrated.")
def run_command(**opts: Any) -> None:
    """Detect faces and recognise their emotion, frame by frame."""
    code = run(**opts)
    if code:
        sys.exit(code)


def run(
    bundle: Optional[Path], runtime: Optional[str], threads: Optional[int], source: str,
    resolution: Optional[str], lores: Optional[str], fps: Optional[float], max_frames: Optional[int],
    duration: Optional[float], loop: bool, detector: str, detector_model: Optional[Path],
    min_confidence: Optional[float], min_face: Optional[int], max_faces: Optional[int], smoothing: float, no_smooth: bool,
    headless: bool, log_path: Optional[Path], log_format: str, save_video: Optional[Path], as_json: bool,
    reconnect_timeout: float, serve: Optional[str] = None, serve_fps: float = 10.0,
    serve_token: Optional[str] = None, serve_token_file: Optional[Path] = None,
    mqtt_url: Optional[str] = None, mqtt_topic: Optional[str] = None, mqtt_device_id: Optional[str] = None,
    mqtt_interval: float = 1.0, mqtt_faces_rate: float = 2.0, mqtt_queue: int = 1000,
    mqtt_password_file: Optional[Path] = None, mqtt_ca: Optional[Path] = None, mqtt_cert: Optional[Path] = None,
    mqtt_key: Optional[Path] = None, no_ha_discovery: bool = False,
    save_images: Optional[Path] = None, detect_scale: Optional[float] = None,
    min_emotion_confidence: float = 0.0,
) -> int:
    """The ``run`` verb; returns the exit code (0, or 3 when the source was lost)."""
    from fer_edge.bundle import load_bundle
    from fer_edge.device.pipeline import Pipeline, close_sinks
    from fer_edge.device.runtime import find_runtime
    from fer_edge.device.detect import StillDetector, YuNetDetector
    from fer_edge.device.sinks import (FaceAnnotator, ImageSaver, StillPrinter, VideoSink, WindowSink,
                                       check_output_path, has_display, open_log)
    from fer_edge.device.sources import StopFlag, describe_source, install_stop_handlers, open_source, parse_resolution

    # Cheap checks first, so a typo fails before any model or camera is touched.
    for path, what in ((log_path, "log"), (save_video, "video")):
        if path is not None:
            check_output_path(path, what)
    if serve is not None:  # live view: bad address or token fails here, before any model loads
        from fer_edge.device.serve import LiveView, parse_bind, read_token, warn_if_open

        serve_host, serve_port = parse_bind(serve)
        serve_token = read_token(serve_token, serve_token_file)
    size = parse_resolution(resolution) if resolution else None
    lores_size = parse_resolution(lores) if lores else None
    kind = describe_source(source)
    still = kind in ("image", "folder")
    if as_json and not still:
        raise FerEdgeError("--json prints results for photos (an image file or a folder of them); for a camera, "
                           "stream or video use --log run.jsonl")
    if save_images is not None and not still:
        raise FerEdgeError("--save-images writes annotated photos (an image file or a folder of them); "
                           "for a camera, stream or video use --save-video")
    window = not headless and not still and has_display()
    if not headless and not still and not window:
        _say("no display available, running headless")
    threads = threads or default_threads()
    mqtt = None
    if mqtt_url is not None:  # checked here, before any model or camera opens (imports paho-mqtt)
        from fer_edge.device.mqtt import mqtt_settings

        mqtt = mqtt_settings(mqtt_url, mqtt_topic, mqtt_device_id, mqtt_interval, mqtt_faces_rate, mqtt_queue,
                             not no_ha_discovery, mqtt_password_file, mqtt_ca, mqtt_cert, mqtt_key)

    rt = find_runtime(runtime)
    verified = load_bundle(bundle)
    stop = StopFlag()
    detector = resolve_detector(detector, verified)
    options = default_options(detector, min_confidence=min_confidence, min_face=min_face, max_faces=max_faces)
    need_image = window or save_video is not None or save_images is not None or serve is not None
    with open_source(source, size, fps, loop=loop, need_image=need_image,
                     reconnect_timeout=reconnect_timeout, stop=stop, lores=lores_size) as src:
        pipeline = Pipeline.from_bundle(verified, detector, detector_model, options, threads=threads, runtime=rt,
                                        smoothing=1.0 if no_smooth else smoothing,
                                        min_emotion_confidence=min_emotion_confidence)
        if detect_scale is not None and isinstance(pipeline.detector, YuNetDetector):
            pipeline.detector.scale, pipeline.detector.max_side = detect_scale, 0  # exactly the factor asked for
        if still:  # photos: searched whole, padded once when no face is found, no frame rate drawn
            pipeline.detector = StillDetector(pipeline.detector)
            pipeline.annotator = FaceAnnotator(show_fps=False)
        sinks: list[Any] = []
        live_view = None
        mqtt_sink = None
        try:
            if still:
                sinks.append(StillPrinter(verified.classes, as_json))
            if save_images is not None:
                sinks.append(ImageSaver(save_images))
            if log_path is not None:
                meta = {"fer_edge": __version__, "bundle": str(verified.root), "bundle_sha256": verified.checksum,
                        "runtime": str(rt), "threads": threads, "detector": pipeline.detector.name,
                        "source": src.name, "smoothing": pipeline.tracker.alpha,
                        "min_emotion_confidence": min_emotion_confidence}
                sinks.append(open_log(log_path, verified.classes, log_format, meta, with_origin=still))
            if save_video is not None:
                sinks.append(VideoSink(save_video, src.fps if not still else 2.0))
            if window:
                sinks.append(WindowSink(stop))
            if serve is not None:
                live_meta = {"runtime": str(rt), "threads": threads, "detector": pipeline.detector.name,
                             "source": src.name, "bundle": verified.root.name, "bundle_sha256": verified.checksum}
                live_view = LiveView(serve_host, serve_port, verified.classes, serve_fps, serve_token, live_meta,
                                      annotated=any(sink.needs_image for sink in sinks))
                sinks.append(live_view)
            if mqtt is not None:
                from fer_edge.device.info import cpu_facts
                from fer_edge.device.mqtt import DeviceInfo, MqttSink

                mqtt_sink = MqttSink(mqtt, verified.classes, DeviceInfo(cpu_facts()["model"], verified.checksum),
                                     stop, _say)
                sinks.append(mqtt_sink)
        except BaseException:
            close_sinks(sinks, pipeline.summary())
            raise
        _say(f"runtime {rt}, {threads} thread{'s' if threads > 1 else ''} | bundle {verified.root} "
             f"(sha256 {verified.checksum[:12]}) | detector {pipeline.detector.name} | source {src.name}")
        if live_view is not None:
            _say(f"live view at {live_view.url}" + (" (token required)" if serve_token else "")
                 + (f"; from another machine e.g. http://{socket.gethostname()}:{live_view.port}/"
                    if serve_host in ("0.0.0.0", "::") else ""))
            if warn_if_open(serve_host, serve_token):
                _say(warn_if_open(serve_host, serve_token))
        if mqtt is not None:
            _say(f"mqtt {mqtt.target.url} -> {mqtt.prefix}/{{state,faces,summary,availability}}"
                 + ("" if no_ha_discovery else f", Home Assistant discovery for device {mqtt.client_id}"))

        restore = install_stop_handlers(stop)
        failure: Optional[BaseException] = None
        try:
            pipeline.run(src, sinks, max_frames=max_frames, duration=duration, stop=stop,
                         fps_limit=fps if fps and not src.live else None)
        except FerEdgeError as exc:  # e.g. the disk filled up mid-run: still close and summarise
            failure = exc
        finally:
            summary = pipeline.summary()
            try:
                if mqtt_sink is not None:  # first, so the log's end record and the printout say what MQTT did
                    summary = mqtt_sink.finish(summary)  # waits at most 5 s for the broker
            finally:
                close_failure = close_sinks(sinks, summary)  # still under our handlers: a 2nd SIGTERM can't cut it
                restore()
    if not still or log_path is not None:
        for line in summary.format().splitlines():
            _say(line)
    failure = failure or close_failure or (mqtt_sink.error if mqtt_sink is not None else None)
    if failure is not None:
        raise failure
    return EXIT_SOURCE_LOST if summary.source_lost else 0


@cli.command("info")
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Bundle to check: a path or a shipped name, ferplus (default) or fer2013.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--log", "log_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A run log (JSONL or CSV): also say what MQTT did in its last run.")
def info_command(bundle: Optional[Path], as_json: bool, log_path: Optional[Path]) -> None:
    """Runtime, CPU, bundle checksums, cameras, OpenCV and MQTT facts of this device.

    Exits 1 when no runtime loads or the bundle fails its checks (after
    printing everything), so a setup script can stop on it.
    """
    facts = device_facts(bundle, log_path)
    click.echo(json.dumps(facts, indent=2) if as_json else format_facts(facts))
    if not facts["runtime"]["selected"] or not facts["bundle"].get("verified"):
        sys.exit(1)


cli.add_command(info_command, "doctor")


def main() -> None:
    """Console-script entry point (``fer-device``)."""
    quiet_native_logs()
    logging.basicConfig(level=logging.INFO, format="fer-device: %(message)s", stream=sys.stderr)
    run_cli(cli)


if __name__ == "__main__":
    main()
