"""An HTTP receiver for daemon/tests/notify.rs: every POST written to OUT_DIR as NNNN.json
(its signature and delivery headers and its body), answered 200.

usage: webhook_sink.py PORT OUT_DIR READY_FILE
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, out, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.makedirs(out, exist_ok=True)


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        tmp = os.path.join(out, f"{n:04d}.part")
        with open(tmp, "w") as f:
            json.dump(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "signature": self.headers.get("X-Fiona-Signature"),
                    "delivery": self.headers.get("X-Fiona-Delivery"),
                    "body": body.decode("utf-8"),
                },
                f,
            )
        os.rename(tmp, os.path.join(out, f"{n:04d}.json"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", port), Hook)
open(ready, "w").close()
server.serve_forever()
