"""Commercial FR API adapters against an HTTP server on 127.0.0.1 that speaks each service's format.

The fake services check what the real ones check (fields, headers, signatures) and answer
with scripted responses, errors included. No test calls the real services.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import urllib.parse

import numpy as np
import pytest
import torch
from _fake_fr_services import SECRETS, FakeService, facepp_check
from PIL import Image

from erasablemask.platform.fr_apis import (
    AliyunFacebody,
    FacePlusPlus,
    FRApiError,
    FRApiThrottled,
    MissingCredentials,
    NoFaceDetected,
    TencentIAI,
    aliyun_rpc_signature,
    build_fr_api,
    encode_image,
    tc3_signature,
)


class FakeClock:
    """``clock``/``sleep`` pair for the adapters: sleeping advances the clock, and is recorded."""

    def __init__(self):
        self.t, self.sleeps = 1000.0, []

    def clock(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def _face(seed: int) -> torch.Tensor:
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------- what each fake service checks
def tencent_check(headers, raw):
    h = {k.lower(): v for k, v in headers.items()}
    if h.get("x-tc-action") != "CompareFace" or h.get("x-tc-version") != "2018-03-01":
        return 200, {"Response": {"Error": {"Code": "InvalidAction", "Message": "bad action"}, "RequestId": "r"}}, {}
    auth = h["authorization"]
    sig = auth.rsplit("Signature=", 1)[1]
    # An independent TC3 computation (Tencent "Signature v3"), not the adapter's function.
    ts = int(h["x-tc-timestamp"])
    import datetime as dt

    date = dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d")
    canon = (
        f"POST\n/\n\ncontent-type:{h['content-type']}\nhost:{h['host']}\n\ncontent-type;host\n"
        + hashlib.sha256(raw).hexdigest()
    )
    sts = f"TC3-HMAC-SHA256\n{ts}\n{date}/iai/tc3_request\n" + hashlib.sha256(canon.encode()).hexdigest()
    k = ("TC3" + SECRETS["TENCENTCLOUD_SECRET_KEY"]).encode()
    for part in (date, "iai", "tc3_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    if (
        sig != hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        or f"Credential={SECRETS['TENCENTCLOUD_SECRET_ID']}/{date}/iai/tc3_request" not in auth
    ):
        return (
            200,
            {"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "bad sig"}, "RequestId": "r"}},
            {},
        )
    body = json.loads(raw)
    Image.open(io.BytesIO(base64.b64decode(body["ImageA"]))).verify()
    return None


def aliyun_check(headers, raw):
    params = dict(urllib.parse.parse_qsl(raw.decode()))
    if params.get("Action") != "CompareFace" or params.get("Version") != "2019-12-30":
        return 400, {"Code": "InvalidAction.NotFound", "Message": "bad action", "RequestId": "r"}, {}
    if params.get("Signature") != aliyun_rpc_signature(SECRETS["ALIBABA_CLOUD_ACCESS_KEY_SECRET"], params):
        return 400, {"Code": "SignatureDoesNotMatch", "Message": "bad sig", "RequestId": "r"}, {}
    return None


@pytest.fixture
def env(monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def fake():
    services = []

    def make(check):
        s = FakeService(check)
        services.append(s)
        return s

    yield make
    for s in services:
        s.close()


def test_aliyun_signature_matches_the_documented_example():
    # Alibaba Cloud's RPC signature documentation: DescribeRegions signed with secret "testsecret" (GET).
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert aliyun_rpc_signature("testsecret", params, method="GET") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_tc3_signature_changes_with_every_signed_input():
    base = dict(service="iai", host="iai.tencentcloudapi.com", timestamp=1_700_000_000, payload=b"{}")
    ref = tc3_signature("k", **base)
    assert len(ref) == 64 and ref == tc3_signature("k", **base)
    for change in ({"payload": b"{ }"}, {"timestamp": 1_700_000_001}, {"host": "x"}, {"service": "cvm"}):
        assert tc3_signature("k", **{**base, **change}) != ref
    assert tc3_signature("k2", **base) != ref


def test_missing_credentials_name_the_variables(monkeypatch):
    for k in SECRETS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("FACEPP_API_KEY", "only-the-key")
    with pytest.raises(MissingCredentials, match="FACEPP_API_KEY, FACEPP_API_SECRET.*missing: FACEPP_API_SECRET"):
        FacePlusPlus()
    with pytest.raises(MissingCredentials, match="TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY"):
        build_fr_api("tencent")
    with pytest.raises(MissingCredentials, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        build_fr_api("aliyun")
    with pytest.raises(LookupError, match="facepp"):
        build_fr_api("azure")


def test_facepp_confidence_thresholds_and_png_roundtrip(env, fake):
    svc = fake(facepp_check)
    svc.script.append(
        (
            200,
            {
                "request_id": "rq1",
                "time_used": 12,
                "confidence": 73.5,
                "thresholds": {"1e-3": 62.3, "1e-4": 69.1, "1e-5": 73.9},
                "faces1": [{"face_token": "a"}],
                "faces2": [{"face_token": "b"}],
            },
            {},
        )
    )
    api = FacePlusPlus(endpoint=svc.url)
    x = _face(0)
    res = api.compare(x, _face(1))
    assert (res.confidence, res.request_id, res.attempts) == (73.5, "rq1", 1)
    assert res.matches("1e-4") and not res.matches("1e-5")
    sent = dict(urllib.parse.parse_qsl(svc.requests[0]["body"].decode()))
    img = torch.from_numpy(np.asarray(Image.open(io.BytesIO(base64.b64decode(sent["image_base64_1"])))))
    expected = ((x + 1) * 127.5).round().permute(1, 2, 0)
    assert torch.equal(img, expected.to(img.dtype))  # the service sees exactly the 8-bit image
    with pytest.raises(ValueError, match="thresholds at FAR"):
        res.matches("1e-2")


def test_facepp_retries_concurrency_limit_with_exponential_backoff(env, fake):
    svc = fake(facepp_check)
    throttled = (403, {"error_message": "CONCURRENCY_LIMIT_EXCEEDED"}, {})
    svc.script += [
        throttled,
        throttled,
        throttled,
        (200, {"request_id": "ok", "confidence": 12.0, "thresholds": {}, "faces1": [1], "faces2": [1]}, {}),
    ]
    clk = FakeClock()
    api = FacePlusPlus(endpoint=svc.url, qps=1000.0, backoff_s=0.5, max_backoff_s=1.5, sleep=clk.sleep, clock=clk.clock)
    res = api.compare(_face(0), _face(1))
    assert res.attempts == 4 and res.confidence == 12.0
    backoffs = [s for s in clk.sleeps if s > 0.01]  # the rate limiter's 1 ms gaps aside
    assert backoffs == [0.5, 1.0, 1.5]  # doubled, capped at max_backoff_s


def test_facepp_gives_up_after_max_retries_and_fails_fast_on_other_errors(env, fake):
    svc = fake(facepp_check)
    svc.script += [(403, {"error_message": "CONCURRENCY_LIMIT_EXCEEDED"}, {})] * 3
    clk = FakeClock()
    api = FacePlusPlus(endpoint=svc.url, max_retries=2, sleep=clk.sleep, clock=clk.clock)
    with pytest.raises(FRApiThrottled, match="CONCURRENCY_LIMIT_EXCEEDED.*after 2 retries"):
        api.compare(_face(0), _face(1))
    assert len(svc.requests) == 3
    svc.script += [(400, {"error_message": "INVALID_IMAGE_SIZE: image_base64_1"}, {})]
    with pytest.raises(FRApiError, match="INVALID_IMAGE_SIZE") as err:
        api.compare(_face(0), _face(1))
    assert err.value.status == 400 and not isinstance(err.value, FRApiThrottled) and len(svc.requests) == 4
    svc.script += [(200, {"request_id": "nf", "faces1": [], "faces2": [{"face_token": "b"}]}, {})]
    with pytest.raises(NoFaceDetected, match="faces1"):
        api.compare(_face(0), _face(1))


def test_facepp_wrong_secret_is_an_authentication_error_without_the_secret(env, fake, monkeypatch, caplog):
    monkeypatch.setenv("FACEPP_API_SECRET", "wrong-secret-ABC")
    svc = fake(facepp_check)
    api = FacePlusPlus(endpoint=svc.url, sleep=lambda s: None)
    with caplog.at_level(logging.DEBUG), pytest.raises(FRApiError, match="AUTHENTICATION_ERROR") as err:
        api.compare(_face(0), _face(1))
    text = str(err.value) + repr(api) + caplog.text
    assert "wrong-secret-ABC" not in text and "fpp-key-123" not in text


def test_tencent_signed_request_score_and_throttling_codes(env, fake, caplog):
    svc = fake(tencent_check)
    limit = (
        200,
        {"Response": {"Error": {"Code": "RequestLimitExceeded", "Message": "too fast"}, "RequestId": "a"}},
        {},
    )
    iai_limit = (
        200,
        {"Response": {"Error": {"Code": "FailedOperation.RequestLimitExceeded", "Message": "qps"}, "RequestId": "b"}},
        {},
    )
    svc.script += [
        limit,
        iai_limit,
        (200, {"Response": {"Score": 48.5, "FaceModelVersion": "3.0", "RequestId": "c"}}, {}),
    ]
    clk = FakeClock()
    api = TencentIAI(endpoint=svc.url, backoff_s=0.25, sleep=clk.sleep, clock=clk.clock)
    with caplog.at_level(logging.DEBUG):
        res = api.compare(_face(0), _face(1))
    assert (res.confidence, res.request_id, res.attempts) == (48.5, "c", 3)
    assert res.matches("1e-3") and not res.matches("1e-4")  # documented 3.0 scores: 40 @1e-3, 50 @1e-4
    assert [s for s in clk.sleeps if s >= 0.25] == [0.25, 0.5]
    assert SECRETS["TENCENTCLOUD_SECRET_KEY"] not in caplog.text + repr(api)
    svc.script.append(
        (
            200,
            {
                "Response": {
                    "Error": {"Code": "InvalidParameterValue.NoFaceInPhoto", "Message": "no face"},
                    "RequestId": "d",
                }
            },
            {},
        )
    )
    with pytest.raises(NoFaceDetected, match="NoFaceInPhoto"):
        api.compare(_face(0), _face(1))


def test_tencent_bad_signature_is_reported_not_retried(env, fake, monkeypatch):
    svc = fake(tencent_check)
    api = TencentIAI(endpoint=svc.url, sleep=lambda s: None)
    monkeypatch.setitem(api._secrets, "TENCENTCLOUD_SECRET_KEY", "not-the-key")
    with pytest.raises(FRApiError, match="AuthFailure.SignatureFailure"):
        api.compare(_face(0), _face(1))
    assert len(svc.requests) == 1


def test_aliyun_signed_request_confidence_and_throttling(env, fake):
    svc = fake(aliyun_check)
    svc.script += [
        (
            400,
            {"Code": "Throttling.User", "Message": "Request was denied due to user flow control.", "RequestId": "a"},
            {"Retry-After": "3"},
        ),
        (503, {"Code": "ServiceUnavailable", "Message": "busy", "RequestId": "b"}, {}),
        (200, {"RequestId": "c", "Data": {"Confidence": 80.25, "Thresholds": [61.0, 69.0, 75.0]}}, {}),
    ]
    clk = FakeClock()
    api = AliyunFacebody(endpoint=svc.url, backoff_s=1.0, sleep=clk.sleep, clock=clk.clock)
    res = api.compare(_face(0), encode_image(_face(1)))
    assert (res.confidence, res.attempts) == (80.25, 3)
    assert res.thresholds == {"1e-3": 61.0, "1e-4": 69.0, "1e-5": 75.0} and res.matches("1e-5")
    assert [s for s in clk.sleeps if s >= 1.0] == [3.0, 2.0]  # Retry-After honoured, then 1 s * 2**1
    params = dict(urllib.parse.parse_qsl(svc.requests[-1]["body"].decode()))
    assert params["AccessKeyId"] == "LTAItest" and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" not in params
    assert SECRETS["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] not in svc.requests[-1]["body"].decode()
    svc.script.append((400, {"Code": "InvalidParameter", "Message": "ImageDataA is invalid", "RequestId": "d"}, {}))
    with pytest.raises(FRApiError, match="InvalidParameter") as err:
        api.compare(_face(0), _face(1))
    assert err.value.status == 400 and len(svc.requests) == 4


def test_rate_limit_spaces_request_starts(env, fake):
    svc = fake(aliyun_check)
    ok = (200, {"RequestId": "c", "Data": {"Confidence": 1.0, "Thresholds": [61.0, 69.0, 75.0]}}, {})
    svc.script += [ok] * 3
    clk = FakeClock()
    api = AliyunFacebody(endpoint=svc.url, qps=4.0, sleep=clk.sleep, clock=clk.clock)
    for _ in range(3):
        api.compare(_face(0), _face(1))
    assert clk.sleeps == [0.25, 0.25]  # the first request starts at once, then one every 1/qps s


def test_unreachable_service_retries_then_raises(env):
    clk = FakeClock()
    api = FacePlusPlus(endpoint="http://127.0.0.1:9/", max_retries=1, timeout_s=2, sleep=clk.sleep, clock=clk.clock)
    with pytest.raises(FRApiThrottled, match="CONNECTION_ERROR"):
        api.compare(_face(0), _face(1))


def test_bad_inputs_fail_before_any_request(env):
    api = FacePlusPlus(endpoint="http://127.0.0.1:9/", sleep=lambda s: None)
    with pytest.raises(ValueError, match="batch of 2"):
        api.compare(torch.zeros(2, 3, 8, 8), _face(0))
    with pytest.raises(ValueError):
        api.compare(torch.full((3, 8, 8), 2.0), _face(0))
    with pytest.raises(ValueError, match="qps"):
        FacePlusPlus(qps=0)
