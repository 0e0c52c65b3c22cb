"""Commercial face-verification APIs (Table III): a pair of images in, the service's confidence out.

One adapter per service, each speaking that service's documented HTTP format:

- ``facepp``: Face++ Compare API (``POST https://api-us.faceplusplus.com/facepp/v3/compare``,
  form fields ``api_key``, ``api_secret``, ``image_base64_1``, ``image_base64_2``; response
  ``confidence`` in [0, 100] and ``thresholds`` at FAR ``1e-3``/``1e-4``/``1e-5``; errors as an
  HTTP status with ``{"error_message": "CODE[: detail]"}``).
- ``tencent``: Tencent Cloud IAI ``CompareFace`` (``POST https://iai.tencentcloudapi.com``,
  version ``2018-03-01``, JSON body ``ImageA``/``ImageB``/``FaceModelVersion``, signed with
  TC3-HMAC-SHA256; response ``{"Response": {"Score": ..., "RequestId": ...}}``, errors as
  ``{"Response": {"Error": {"Code", "Message"}}}`` with HTTP 200).
- ``aliyun``: Alibaba Cloud Visual Intelligence ``facebody`` ``CompareFace`` (RPC style,
  version ``2019-12-30``, ``POST https://facebody.cn-shanghai.aliyuncs.com``, HMAC-SHA1 signature
  version 1.0 over the sorted parameters, ``ImageDataA``/``ImageDataB`` base64; response
  ``{"Data": {"Confidence", "Thresholds"}}``, errors as an HTTP status with ``{"Code", "Message"}``).

Every adapter:

- reads its credentials only from environment variables (:attr:`FRApi.env_vars`); they are
  kept in private attributes, never put in ``repr``, error messages, logs or MLflow params;
  a missing variable raises :class:`MissingCredentials` naming all of them;
- rate-limits itself to ``qps`` request starts per second (thread-safe; set it from your
  account's quota; the defaults are conservative);
- retries with exponential back-off (``backoff_s * 2**attempt``, capped at ``max_backoff_s``,
  or the server's ``Retry-After``) on the service's documented throttling / concurrency /
  transient codes (:attr:`FRApi.retry_codes`) and on connection errors, at most
  ``max_retries`` times, then raises :class:`FRApiThrottled`;
- raises :class:`FRApiError` (service, code, HTTP status, message) on any other error, and
  :class:`NoFaceDetected` when the service found no face in one image (a failed match for
  an impersonation attack: the caller decides how to count it).

This is I/O, not Ray: callers that want parallelism run several clients (the service's
quota is the bottleneck, not this process). ``endpoint`` is overridable so tests can point an
adapter at an HTTP server on 127.0.0.1 (``tests/platform/test_fr_apis.py``); no test calls the
real services.
"""

from __future__ import annotations

import base64
import datetime as _dt
import email.utils
import hashlib
import hmac
import io
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from PIL import Image

from erasablemask.models.image_checks import check_image_range

__all__ = [
    "FRApi",
    "FacePlusPlus",
    "TencentIAI",
    "AliyunFacebody",
    "CompareResult",
    "FRApiError",
    "FRApiThrottled",
    "NoFaceDetected",
    "MissingCredentials",
    "FR_APIS",
    "build_fr_api",
    "encode_image",
    "tc3_signature",
    "aliyun_rpc_signature",
]

log = logging.getLogger(__name__)


class MissingCredentials(ValueError):
    """A service's credentials are not in the environment; the message names the variables."""


class FRApiError(RuntimeError):
    """A service answered with an error (or an unreadable response).

    Attributes:
        service: adapter name (``facepp``, ``tencent``, ``aliyun``).
        code: the service's error code (``"CONCURRENCY_LIMIT_EXCEEDED"``, ``"RequestLimitExceeded"``, ...).
        status: HTTP status (None for a connection error).
    """

    def __init__(self, service: str, code: str, message: str, status: int | None = None) -> None:
        self.service, self.code, self.status = service, code, status
        super().__init__(f"{service}: {code} (HTTP {status if status is not None else '-'}): {message}")


class FRApiThrottled(FRApiError):
    """Still throttled (or unreachable) after ``max_retries`` retries; lower ``qps`` or raise the quota."""


class NoFaceDetected(FRApiError):
    """The service found no face in one of the two images."""


@dataclass(frozen=True)
class CompareResult:
    """One comparison.

    Attributes:
        service: adapter name.
        confidence: the service's similarity score, in the service's units ([0, 100] for all three).
        thresholds: the service's own decision thresholds by FAR (``{"1e-3": 62.3, ...}``), where it
            publishes them (per response for Face++ and Aliyun, from the documentation for Tencent).
        request_id: the service's request id (for support tickets).
        attempts: HTTP requests this comparison took (1 + retries).
    """

    service: str
    confidence: float
    thresholds: dict[str, float]
    request_id: str
    attempts: int = 1

    def matches(self, far: str = "1e-4") -> bool:
        """Whether the confidence clears the service's threshold at ``far`` (e.g. ``"1e-4"``)."""
        if far not in self.thresholds:
            raise ValueError(f"{self.service} gives thresholds at FAR {sorted(self.thresholds)}; got far={far!r}")
        return self.confidence >= self.thresholds[far]


def encode_image(image: torch.Tensor | bytes) -> bytes:
    """PNG bytes of ``image``: a ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in [-1, 1], or already-encoded bytes.

    PNG is lossless, so the service sees exactly the 8-bit image that was scored locally.
    """
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise ValueError("image bytes are empty; pass a PNG/JPEG file's contents or a (3, H, W) tensor")
        return bytes(image)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a tensor in [-1, 1] or encoded bytes; got {type(image).__name__}")
    x = image if image.ndim == 4 else image.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError(f"one image per comparison side; got a batch of {x.shape[0]}")
    check_image_range(x, "fr_apis image")
    arr = ((x[0].detach().cpu().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- signatures (pure functions, tested)
def tc3_signature(
    secret_key: str,
    *,
    service: str,
    host: str,
    timestamp: int,
    payload: bytes,
    content_type: str = "application/json; charset=utf-8",
) -> str:
    """Tencent Cloud TC3-HMAC-SHA256 signature (hex) of a POST to ``/`` signing ``content-type;host``.

    Follows Tencent Cloud's "Signature v3": canonical request -> string to sign with the UTC
    date and ``<date>/<service>/tc3_request`` scope -> HMAC chain ``TC3+key`` -> date -> service
    -> ``tc3_request`` -> string to sign.
    """
    date = _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).strftime("%Y-%m-%d")
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{content_type}\nhost:{host}\n",
            "content-type;host",
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            f"{date}/{service}/tc3_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = mac(mac(mac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()


def _pct(s: str) -> str:
    return urllib.parse.quote(s, safe="-_.~")  # RFC 3986, as Alibaba Cloud's signature v1 requires


def aliyun_rpc_signature(secret: str, params: dict[str, str], method: str = "POST") -> str:
    """Alibaba Cloud RPC signature v1.0 (HMAC-SHA1, base64) of ``params`` (``Signature`` itself excluded)."""
    query = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in sorted(params.items()) if k != "Signature")
    to_sign = f"{method}&{_pct('/')}&{_pct(query)}"
    return _b64(hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest())


# ---------------------------------------------------------------- the shared client
@dataclass
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(eq=False)
class FRApi:
    """Base of the adapters: credentials from the environment, rate limit, retries (module docstring).

    Attributes:
        endpoint: the service URL (override for a proxy or a test server).
        qps: at most this many request starts per second (> 0).
        max_retries: retries after a throttling / transient error (>= 0).
        backoff_s: first back-off delay; doubled at each retry.
        max_backoff_s: cap of one back-off delay.
        timeout_s: HTTP timeout of one request.
        sleep, clock: injectable for tests (default ``time.sleep``, ``time.monotonic``).
    """

    name: ClassVar[str] = ""
    env_vars: ClassVar[tuple[str, ...]] = ()
    retry_codes: ClassVar[frozenset[str]] = frozenset()
    retry_prefixes: ClassVar[tuple[str, ...]] = ()
    default_endpoint: ClassVar[str] = ""

    endpoint: str = ""
    qps: float = 1.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 32.0
    timeout_s: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if not self.endpoint:
            self.endpoint = self.default_endpoint
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"{self.name}: endpoint must be an http(s) URL; got {self.endpoint!r}")
        if not self.qps > 0:
            raise ValueError(f"{self.name}: qps must be > 0 (requests per second); got {self.qps}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"{self.name}: max_retries, backoff_s and max_backoff_s must be >= 0")
        missing = [v for v in self.env_vars if not os.environ.get(v)]
        if missing:
            raise MissingCredentials(
                f"{self.name}: credentials missing; set the environment variable(s) {', '.join(self.env_vars)} "
                f"(missing: {', '.join(missing)}). Credentials are read only from the environment."
            )
        self._secrets = {v: os.environ[v] for v in self.env_vars}
        self._lock = threading.Lock()
        self._next_start = 0.0

    # -- what an adapter implements
    def _request(self, image_a: bytes, image_b: bytes) -> tuple[bytes, dict[str, str]]:
        """The request body and headers for one comparison (signed with fresh time/nonce)."""
        raise NotImplementedError

    def _parse(self, reply: _Reply) -> CompareResult:
        """The result, or raise FRApiError/NoFaceDetected (retryable codes are detected by :meth:`_error_code`)."""
        raise NotImplementedError

    def _error_code(self, reply: _Reply) -> tuple[str, str] | None:
        """``(code, message)`` if ``reply`` is an error, else None."""
        raise NotImplementedError

    # -- shared machinery
    def _is_retryable(self, code: str) -> bool:
        return code in self.retry_codes or code.startswith(self.retry_prefixes)

    def _wait_turn(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.qps
        if start > now:
            self.sleep(start - now)

    def _post(self, body: bytes, headers: dict[str, str]) -> _Reply:
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, raw, hdrs = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, raw, hdrs = err.code, err.read(), dict(err.headers or {})
        try:
            parsed = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, ValueError):
            raise FRApiError(self.name, "UNREADABLE_RESPONSE", f"not JSON: {raw[:200]!r}", status) from None
        if not isinstance(parsed, dict):
            raise FRApiError(self.name, "UNREADABLE_RESPONSE", f"expected a JSON object, got {parsed!r:.200}", status)
        return _Reply(status=status, body=parsed, headers=hdrs)

    def _delay(self, attempt: int, reply: _Reply | None) -> float:
        retry_after = (reply.headers.get("Retry-After") or reply.headers.get("retry-after")) if reply else None
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                when = email.utils.parsedate_to_datetime(retry_after)
                return min(max(0.0, when.timestamp() - time.time()), self.max_backoff_s)
        return min(self.backoff_s * 2.0**attempt, self.max_backoff_s)

    def compare(self, image_a: torch.Tensor | bytes, image_b: torch.Tensor | bytes) -> CompareResult:
        """The service's confidence that ``image_a`` and ``image_b`` show the same person.

        Args:
            image_a, image_b: ``(3, H, W)`` tensors in [-1, 1] (sent as PNG) or encoded image bytes.

        Raises:
            ValueError: an image is not a valid input.
            NoFaceDetected: the service found no face in one image.
            FRApiThrottled: still throttled / unreachable after ``max_retries`` retries.
            FRApiError: any other error the service reports.
        """
        a, b = encode_image(image_a), encode_image(image_b)
        last: FRApiError | None = None
        for attempt in range(self.max_retries + 1):
            self._wait_turn()
            body, headers = self._request(a, b)
            reply: _Reply | None = None
            try:
                reply = self._post(body, headers)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = FRApiError(self.name, "CONNECTION_ERROR", f"{self.endpoint}: {getattr(err, 'reason', err)}")
            else:
                error = self._error_code(reply)
                if error is None:
                    result = self._parse(reply)
                    return CompareResult(
                        result.service, result.confidence, result.thresholds, result.request_id, attempts=attempt + 1
                    )
                code, message = error
                if not self._is_retryable(code):
                    cls = NoFaceDetected if self._is_no_face(code, message) else FRApiError
                    raise cls(self.name, code, message, reply.status)
                last = FRApiError(self.name, code, message, reply.status)
            if attempt < self.max_retries:
                delay = self._delay(attempt, reply)
                log.warning("%s: %s; retry %d/%d in %.1f s", self.name, last.code, attempt + 1, self.max_retries, delay)
                self.sleep(delay)
        assert last is not None
        raise FRApiThrottled(
            self.name,
            last.code,
            f"gave up after {self.max_retries} retries ({last}); lower qps or raise the service quota",
            last.status,
        )

    def _is_no_face(self, code: str, message: str) -> bool:
        return False

    def __repr__(self) -> str:  # never the secrets
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, qps={self.qps}, max_retries={self.max_retries})"


@dataclass(eq=False, repr=False)
class FacePlusPlus(FRApi):
    """Face++ Compare API v3 (``FACEPP_API_KEY``, ``FACEPP_API_SECRET``).

    Retried (Face++ error documentation): ``CONCURRENCY_LIMIT_EXCEEDED`` (HTTP 403, the
    per-key concurrency quota) and ``INTERNAL_ERROR`` (HTTP 500, "retry"). A response without
    ``confidence`` (no face in ``faces1`` or ``faces2``) raises :class:`NoFaceDetected`.
    """

    name: ClassVar[str] = "facepp"
    env_vars: ClassVar[tuple[str, ...]] = ("FACEPP_API_KEY", "FACEPP_API_SECRET")
    retry_codes: ClassVar[frozenset[str]] = frozenset({"CONCURRENCY_LIMIT_EXCEEDED", "INTERNAL_ERROR"})
    default_endpoint: ClassVar[str] = "https://api-us.faceplusplus.com/facepp/v3/compare"

    def _request(self, image_a: bytes, image_b: bytes) -> tuple[bytes, dict[str, str]]:
        form = {
            "api_key": self._secrets["FACEPP_API_KEY"],
            "api_secret": self._secrets["FACEPP_API_SECRET"],
            "image_base64_1": _b64(image_a),
            "image_base64_2": _b64(image_b),
        }
        return urllib.parse.urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}

    def _error_code(self, reply: _Reply) -> tuple[str, str] | None:
        msg = reply.body.get("error_message")
        if msg is None and reply.status < 400:
            return None
        msg = str(msg or f"HTTP {reply.status} without error_message")
        return msg.split(":", 1)[0].strip(), msg

    def _parse(self, reply: _Reply) -> CompareResult:
        body = reply.body
        if "confidence" not in body:
            which = [k for k in ("faces1", "faces2") if not body.get(k)]
            raise NoFaceDetected(
                self.name, "NO_FACE", f"no face detected in {' and '.join(which) or 'an image'}", reply.status
            )
        return CompareResult(
            self.name,
            float(body["confidence"]),
            {str(k): float(v) for k, v in (body.get("thresholds") or {}).items()},
            str(body.get("request_id", "")),
        )


# Tencent IAI CompareFace documentation: with FaceModelVersion 3.0 a score of 40 corresponds to
# FAR 1e-3, 50 to 1e-4 and 60 to 1e-5 (not returned per response).
TENCENT_THRESHOLDS_V3 = {"1e-3": 40.0, "1e-4": 50.0, "1e-5": 60.0}


@dataclass(eq=False, repr=False)
class TencentIAI(FRApi):
    """Tencent Cloud IAI ``CompareFace`` 2018-03-01, TC3-HMAC-SHA256 (``TENCENTCLOUD_SECRET_ID``, ``..._SECRET_KEY``).

    Retried (Tencent Cloud common error codes): ``RequestLimitExceeded`` and its sub-codes
    (``RequestLimitExceeded.UinLimitExceeded``, ``.IPLimitExceeded``, ...),
    ``FailedOperation.RequestLimitExceeded`` (IAI's own frequency limit), ``InternalError``.
    ``InvalidParameterValue.NoFaceInPhoto`` raises :class:`NoFaceDetected`.

    Attributes:
        region: ``X-TC-Region`` (default ``ap-guangzhou``).
        face_model_version: ``FaceModelVersion`` ("3.0", the documentation's default).
    """

    name: ClassVar[str] = "tencent"
    env_vars: ClassVar[tuple[str, ...]] = ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY")
    retry_codes: ClassVar[frozenset[str]] = frozenset({"FailedOperation.RequestLimitExceeded", "InternalError"})
    retry_prefixes: ClassVar[tuple[str, ...]] = ("RequestLimitExceeded",)
    default_endpoint: ClassVar[str] = "https://iai.tencentcloudapi.com"
    service: ClassVar[str] = "iai"
    version: ClassVar[str] = "2018-03-01"

    qps: float = 10.0
    region: str = "ap-guangzhou"
    face_model_version: str = "3.0"

    def _request(self, image_a: bytes, image_b: bytes) -> tuple[bytes, dict[str, str]]:
        payload = json.dumps(
            {"ImageA": _b64(image_a), "ImageB": _b64(image_b), "FaceModelVersion": self.face_model_version}
        ).encode()
        host = urllib.parse.urlsplit(self.endpoint).netloc
        ts = int(time.time())
        ctype = "application/json; charset=utf-8"
        sig = tc3_signature(
            self._secrets["TENCENTCLOUD_SECRET_KEY"],
            service=self.service,
            host=host,
            timestamp=ts,
            payload=payload,
            content_type=ctype,
        )
        date = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d")
        auth = (
            f"TC3-HMAC-SHA256 Credential={self._secrets['TENCENTCLOUD_SECRET_ID']}/{date}/{self.service}/"
            f"tc3_request, SignedHeaders=content-type;host, Signature={sig}"
        )
        return payload, {
            "Authorization": auth,
            "Content-Type": ctype,
            "Host": host,
            "X-TC-Action": "CompareFace",
            "X-TC-Timestamp": str(ts),
            "X-TC-Version": self.version,
            "X-TC-Region": self.region,
        }

    def _error_code(self, reply: _Reply) -> tuple[str, str] | None:
        resp = reply.body.get("Response")
        if not isinstance(resp, dict):
            return ("UNREADABLE_RESPONSE", f"no 'Response' object (HTTP {reply.status})")
        err = resp.get("Error")
        if err is None:
            return None
        return str(err.get("Code", "Unknown")), str(err.get("Message", ""))

    def _is_no_face(self, code: str, message: str) -> bool:
        return code == "InvalidParameterValue.NoFaceInPhoto"

    def _parse(self, reply: _Reply) -> CompareResult:
        resp = reply.body["Response"]
        if "Score" not in resp:
            raise FRApiError(self.name, "UNREADABLE_RESPONSE", f"no Score in {sorted(resp)}", reply.status)
        thresholds = TENCENT_THRESHOLDS_V3 if self.face_model_version == "3.0" else {}
        return CompareResult(self.name, float(resp["Score"]), dict(thresholds), str(resp.get("RequestId", "")))


@dataclass(eq=False, repr=False)
class AliyunFacebody(FRApi):
    """Alibaba Cloud facebody ``CompareFace`` 2019-12-30 (``ALIBABA_CLOUD_ACCESS_KEY_ID``, ``..._SECRET``).

    Retried (Alibaba Cloud common error codes): ``Throttling`` and its sub-codes
    (``Throttling.User``, ``Throttling.Api``, ...), ``ServiceUnavailable``, ``InternalError``.
    Per-response ``Thresholds`` are FAR 1e-3, 1e-4, 1e-5 in that order.
    """

    name: ClassVar[str] = "aliyun"
    env_vars: ClassVar[tuple[str, ...]] = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    retry_codes: ClassVar[frozenset[str]] = frozenset({"ServiceUnavailable", "InternalError"})
    retry_prefixes: ClassVar[tuple[str, ...]] = ("Throttling",)
    default_endpoint: ClassVar[str] = "https://facebody.cn-shanghai.aliyuncs.com/"
    version: ClassVar[str] = "2019-12-30"

    qps: float = 2.0

    def _request(self, image_a: bytes, image_b: bytes) -> tuple[bytes, dict[str, str]]:
        params = {
            "Action": "CompareFace",
            "Version": self.version,
            "Format": "JSON",
            "AccessKeyId": self._secrets["ALIBABA_CLOUD_ACCESS_KEY_ID"],
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ImageDataA": _b64(image_a),
            "ImageDataB": _b64(image_b),
        }
        params["Signature"] = aliyun_rpc_signature(self._secrets["ALIBABA_CLOUD_ACCESS_KEY_SECRET"], params)
        return urllib.parse.urlencode(params).encode(), {"Content-Type": "application/x-www-form-urlencoded"}

    def _error_code(self, reply: _Reply) -> tuple[str, str] | None:
        if reply.status < 400 and "Code" not in reply.body:
            return None
        return str(reply.body.get("Code", f"HTTP{reply.status}")), str(reply.body.get("Message", ""))

    def _parse(self, reply: _Reply) -> CompareResult:
        data = reply.body.get("Data")
        if not isinstance(data, dict) or "Confidence" not in data:
            raise FRApiError(
                self.name, "UNREADABLE_RESPONSE", f"no Data.Confidence in {sorted(reply.body)}", reply.status
            )
        thr = [float(t) for t in data.get("Thresholds") or []]
        return CompareResult(
            self.name,
            float(data["Confidence"]),
            dict(zip(("1e-3", "1e-4", "1e-5"), thr)),
            str(reply.body.get("RequestId", "")),
        )


FR_APIS: dict[str, type[FRApi]] = {c.name: c for c in (FacePlusPlus, TencentIAI, AliyunFacebody)}


def build_fr_api(name: str, **options: Any) -> FRApi:
    """The adapter ``name`` (``facepp``, ``tencent``, ``aliyun``) with ``options`` (endpoint, qps, retries, ...).

    Raises:
        LookupError: unknown name.
        MissingCredentials: its environment variables are not set.
    """
    if name not in FR_APIS:
        raise LookupError(f"unknown FR API {name!r}; choose one of {sorted(FR_APIS)}")
    return FR_APIS[name](**options)
