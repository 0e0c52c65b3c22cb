"""HTTP servers on 127.0.0.1 that speak a commercial FR service's format (shared by tests/platform/test_fr_apis.py
and tests/platform/test_commercial_scoring.py). No test calls the real services."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

SECRETS = {
    "FACEPP_API_KEY": "fpp-key-123",
    "FACEPP_API_SECRET": "fpp-secret-XYZ",
    "TENCENTCLOUD_SECRET_ID": "AKIDtest",
    "TENCENTCLOUD_SECRET_KEY": "tencent-secret-XYZ",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAItest",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "aliyun-secret-XYZ",
}


class FakeService:
    """A scripted HTTP service: each POST pops the next (status, body, headers) and is recorded."""

    def __init__(self, check, respond=None):
        self.script: list[tuple[int, dict, dict]] = []
        self.requests: list[dict] = []
        self.check = check  # (headers, body bytes) -> error response tuple or None
        self.respond = respond  # (headers, body bytes) -> response tuple; None: pop the script
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                service.requests.append({"headers": dict(self.headers), "body": raw})
                reply = service.check(dict(self.headers), raw)
                if reply is None:
                    reply = service.respond(dict(self.headers), raw) if service.respond else service.script.pop(0)
                status, body, headers = reply
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def facepp_check(headers, raw):
    form = dict(urllib.parse.parse_qsl(raw.decode()))
    if form.get("api_key") != SECRETS["FACEPP_API_KEY"] or form.get("api_secret") != SECRETS["FACEPP_API_SECRET"]:
        return 401, {"error_message": "AUTHENTICATION_ERROR"}, {}
    for k in ("image_base64_1", "image_base64_2"):
        if k not in form:
            return 400, {"error_message": f"MISSING_ARGUMENTS: {k}"}, {}
        Image.open(io.BytesIO(base64.b64decode(form[k]))).verify()  # a decodable image
    return None
