#!/usr/bin/env python3
"""A local stand-in for a Slack incoming webhook, for the offline demo.

Answers every POST with 200 "ok" and appends the body (one JSON document a
line) to the file given, so release.pipe's notifications can be read without
internet access:

    scripts/webhook-sink.py 127.0.0.1:8099 var/notifications.jsonl &
    export SLACK_WEBHOOK=http://127.0.0.1:8099/hook
"""
import http.server
import sys


def main() -> None:
    if len(sys.argv) != 3 or ":" not in sys.argv[1]:
        sys.exit("usage: webhook-sink.py HOST:PORT FILE")
    host, port = sys.argv[1].rsplit(":", 1)
    out = sys.argv[2]

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with open(out, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    http.server.ThreadingHTTPServer((host, int(port)), Hook).serve_forever()


if __name__ == "__main__":
    main()
