"""The README's picture of the live view: the demo clip served by ``fer-device``, shot by headless Chromium.

    python -m fer_edge.benchmarks.live_view_screenshot --wait 200 --out docs/images/live-view.png

Starts ``fer-device run --source demo --loop --fps 15 --serve 127.0.0.1:0``
with a throwaway token, lets it run `--wait` seconds (so the timeline has a
few minutes in it), loads the page in ``chromium --headless`` and saves the
screenshot, then stops the run with SIGTERM.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wait", type=float, default=200.0, help="seconds the run goes on before the picture")
    parser.add_argument("--size", default="1280,1040", help="browser window WIDTH,HEIGHT")
    parser.add_argument("--out", type=Path, default=Path("docs/images/live-view.png"))
    parser.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args(argv)
    if not args.browser:
        sys.exit("error: no chromium found (apt-get install chromium)")
    token = secrets.token_urlsafe(16)
    script = Path(sys.executable).with_name("fer-device")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fer_edge.device.cli"]
    proc = subprocess.Popen([*command, "run", "--source", "demo", "--loop", "--fps", "15", "--headless",
                             "--serve", "127.0.0.1:0", "--serve-token", token],
                            stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        while not url:
            line = proc.stderr.readline()
            if not line:
                sys.exit("error: fer-device stopped before serving")
            match = re.search(r"live view at (http://\S+/)", line)
            url = match.group(1) if match else ""
        print(f"serving at {url}; waiting {args.wait:g} s for the timeline to fill", file=sys.stderr)
        time.sleep(args.wait)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([args.browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
                            f"--window-size={args.size}",
                            "--timeout=8000", f"--screenshot={args.out.resolve()}", f"{url}?token={token}"],
                           check=True, capture_output=True, timeout=120)
        print(f"wrote {args.out}", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


if __name__ == "__main__":
    main()
