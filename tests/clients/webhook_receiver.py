"""A webhook receiver on loopback that checks every delivery with the Standard Webhooks
reference library (`standardwebhooks` from PyPI), independently of easel's own signing code.

    webhook_receiver.py PORT SECRET FAIL_FIRST

Listens on 127.0.0.1:PORT (0: any free port) and prints `listening PORT`. POST /hook: the
first FAIL_FIRST deliveries are answered 500, later ones 204. GET /log answers what arrived,
as JSON: one entry per delivery, with whether its signature verified.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

port, secret, fail_first = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
verifier = Webhook(secret)
deliveries = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        entry = {
            "path": self.path,
            "id": self.headers.get("webhook-id"),
            "timestamp": self.headers.get("webhook-timestamp"),
            "contentType": self.headers.get("content-type"),
        }
        try:
            payload = verifier.verify(body, dict(self.headers.items()))
            entry.update(verified=True, type=payload["type"], data=payload["data"])
        except WebhookVerificationError as e:
            entry.update(verified=False, error=str(e))
        # A tampered body must fail verification: the check really checks.
        try:
            verifier.verify(body + b" ", dict(self.headers.items()))
            entry["tamperedVerified"] = True
        except WebhookVerificationError:
            entry["tamperedVerified"] = False
        with lock:
            answer = 500 if len(deliveries) < fail_first else 204
            entry["answered"] = answer
            deliveries.append(entry)
        self.send_response(answer)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        with lock:
            body = json.dumps(deliveries).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
