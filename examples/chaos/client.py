#!/usr/bin/env python3
"""The client of examples/chaos.pipe: starts a small upstream (python's
http.server on 127.0.0.1:$UPSTREAM_PORT), then fetches a page through the
chaos proxy at $API ten times, retrying each 429 and 503 after the
Retry-After the proxy sent (at most 5 tries). Exits 1 if a fetch never
succeeded, so the stage's `required` decides what that means for the run."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

api = os.environ["API"]
port = os.environ.get("UPSTREAM_PORT", "18089")
here = os.path.dirname(os.path.abspath(__file__))
server = subprocess.Popen(
    [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1", "-d", here],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    ok = retried = 0
    for i in range(10):
        for attempt in range(5):
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(f"{api}/client.py", timeout=5) as r:
                    r.read()
                ok += 1
                print(f"request {i}: 200 in {1000 * (time.monotonic() - t0):.0f} ms")
                break
            except urllib.error.HTTPError as e:
                wait = float(e.headers.get("Retry-After") or 0.2)
                retried += 1
                print(f"request {i}: {e.code}, retrying after {wait:g}s")
                time.sleep(wait)
    print(f"{ok}/10 fetched, {retried} retries")
    sys.exit(0 if ok == 10 else 1)
finally:
    server.terminate()
    server.wait()
