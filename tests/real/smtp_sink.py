"""An SMTP sink for daemon/tests/notify.rs: STARTTLS required (aiosmtpd), every message
written to OUT_DIR as NNNN.eml (written, then renamed into place).

usage: smtp_sink.py PORT OUT_DIR CERT KEY READY_FILE
"""
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller

port, out, cert, key, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
os.makedirs(out, exist_ok=True)


class Sink:
    async def handle_DATA(self, server, session, envelope):
        if session.ssl is None:
            return "530 STARTTLS required"
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        tmp = os.path.join(out, f"{n:04d}.part")
        with open(tmp, "wb") as f:
            f.write(("X-Sink-Rcpt: " + ",".join(envelope.rcpt_tos) + "\r\n").encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(out, f"{n:04d}.eml"))
        return "250 OK"


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
controller = Controller(Sink(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
controller.start()
open(ready, "w").close()
while True:
    time.sleep(3600)
