"""Commercial FR services as black-box scorers of ``evaluate`` / ``compare`` (Table III), against a fake Face++ on
127.0.0.1 whose confidence is a hash of the two images it receives: a row's confidence is right only if the right
face (protected, restored or clean, of the right sample) was sent with the right target photo."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.parse

import numpy as np
import pandas as pd
import pytest
from _competitor_fr import projection_fr_models
from _curriculum_tiny import tiny_config
from _fake_fr_services import SECRETS, FakeService, facepp_check
from PIL import Image

from erasablemask.experiments.config.loading import dump_config
from erasablemask.experiments.config.schema import COMMERCIAL_APIS
from erasablemask.experiments.evaluation.batches import evaluation_batches
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.evaluation.records import read_records
from erasablemask.experiments.evaluation.targets import build_targets, target_index_for
from erasablemask.experiments.seeding import derive_seed
from erasablemask.platform.cli.main import main
from erasablemask.platform.fr_apis import FR_APIS, FacePlusPlus, encode_image

THRESHOLDS = {"1e-3": 62.327, "1e-4": 69.101, "1e-5": 73.975}  # Face++'s published values
TINY = ["evaluation.max_images=8", "evaluation.transforms=[none]"]


def _pixels(png: bytes) -> bytes:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).tobytes()


def fake_verdict(png_a: bytes, png_b: bytes) -> float | None:
    """The fake service's confidence for a pair (None: "no face" in the first image, about one pair in five)."""
    h = hashlib.sha256(_pixels(png_a) + b"|" + _pixels(png_b)).digest()
    if h[4] % 5 == 0:
        return None
    return round(int.from_bytes(h[:4], "big") / 2**32 * 100, 3)


def facepp_respond(headers, raw):
    form = dict(urllib.parse.parse_qsl(raw.decode()))
    a, b = (base64.b64decode(form[k]) for k in ("image_base64_1", "image_base64_2"))
    conf = fake_verdict(a, b)
    if conf is None:
        return 200, {"request_id": "nf", "faces1": [], "faces2": [{"face_token": "b"}]}, {}
    body = {"request_id": "r", "confidence": conf, "thresholds": THRESHOLDS, "faces1": [1], "faces2": [1]}
    return 200, body, {}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("erasablemask_home")


@pytest.fixture(autouse=True)
def private_home(home, monkeypatch):
    """Nothing here trains or caches into the user's ~/.cache/erasablemask (the FR models are projections; the
    attribute classifier of the edit-accuracy observer is trained once for the module)."""
    monkeypatch.setenv("ERASABLEMASK_HOME", str(home))


@pytest.fixture
def facepp(monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    svc = FakeService(facepp_check, facepp_respond)
    yield svc
    svc.close()


class _Mirror(Protection):
    """Protects by a horizontal flip and erases by flipping back: the restored face is the clean one."""

    name = "mirror"
    can_erase = True

    def _protect(self, x, x_target, *, att_a, att_b):
        return x.flip(-1)

    def _erase(self, x_protected, *, att_a, att_b):
        return x_protected.flip(-1)


def _expected(cfg, protect) -> pd.DataFrame:
    """What the services must have said, recomputed here: per kept sample, the confidence of its protected, restored
    and clean face against its target's evaluation photo (the seeded subset: the smallest keys)."""
    targets = build_targets(cfg)
    rows = []
    for b in evaluation_batches(cfg, "test", cfg.evaluation.max_images):
        which = target_index_for(b.index, len(targets))
        for i, s in enumerate(b.index.tolist()):
            t = 0 if which is None else int(which[i])
            tgt = encode_image(targets.eval_images[t])
            prot = protect(b.x[i : i + 1], targets.train_images[t : t + 1])[0]
            rows.append(dict(sample=s, key=derive_seed(cfg.seed, "commercial_apis", s), target=targets.names[t],
                             protected=fake_verdict(encode_image(prot), tgt),
                             clean=fake_verdict(encode_image(b.x[i]), tgt)))
    frame = pd.DataFrame(rows).nsmallest(cfg.evaluation.commercial_apis.max_images, "key").set_index("sample")
    return frame.sort_index().fillna(0.0)  # no face: confidence 0


def test_config_names_exactly_the_adapters():
    assert list(COMMERCIAL_APIS) == list(FR_APIS)


def test_evaluation_sends_the_seeded_subset_and_records_each_service_verdict(facepp, tmp_path):
    from erasablemask.platform.evaluation_run import evaluate_and_write

    cfg = tiny_config(*TINY, "evaluation.commercial_apis.max_images=5")
    with projection_fr_models(cfg) as models:
        report, files = evaluate_and_write(
            cfg, _Mirror(), tmp_path / "out", run="r", stage=None, models=models, n_boot=50, progress=False,
            services={"facepp": FacePlusPlus(endpoint=facepp.url, qps=1000.0)},
        )
        expected = _expected(cfg, lambda x, xt: x.flip(-1))
    records = read_records(files.records)  # the commercial rows round-trip through the schema
    com = records[records["role"] == "commercial"]
    assert set(com["model"]) == {"facepp"} and set(com["transform"]) == {"none"} and len(com) == 2 * 5
    assert len(facepp.requests) == 3 * 5  # protected, restored, clean per face
    prot = com[com["kind"] == "protected"].set_index("sample").sort_index()
    clean = com[com["kind"] == "clean"].set_index("sample").sort_index()
    assert list(prot.index) == list(clean.index) == list(expected.index)
    assert list(prot["target"]) == list(expected["target"])
    np.testing.assert_allclose(prot["api_confidence"], expected["protected"], atol=1e-3)
    np.testing.assert_allclose(clean["api_confidence"], expected["clean"], atol=1e-3)
    # the restored face is the clean one: the service's verdict on it must be the clean verdict
    np.testing.assert_allclose(prot["api_confidence_restored"], expected["clean"], atol=1e-3)
    assert (prot["api_thr_far_0p0001"] == np.float32(THRESHOLDS["1e-4"])).all()  # no-face rows too
    assert com["cos_target"].isna().all() and com["attack_success"].isna().all()
    fr_rows = records[records["role"] != "commercial"]
    assert fr_rows["api_confidence"].isna().all() and fr_rows["cos_target"].notna().all()

    rates = pd.read_csv(files.rates)
    r = rates[(rates["model"] == "facepp") & (rates["kind"] == "protected")].set_index("rate")
    conf = expected["protected"].to_numpy(np.float32)
    assert r.loc["api_confidence", "value"] == pytest.approx(conf.mean() / 100, abs=1e-6)
    for far, thr in THRESHOLDS.items():
        assert r.loc[f"api_asr_{far}", "value"] == pytest.approx(float((conf > np.float32(thr)).mean()))
    assert r.loc["api_confidence", "lo"] <= r.loc["api_confidence", "value"] <= r.loc["api_confidence", "hi"]
    assert r.loc["api_confidence_restored", "value"] == pytest.approx(expected["clean"].mean() / 100, abs=1e-6)
    assert "asr" not in r.index  # no FR rate on a service's rows
    summary = json.loads(files.summary.read_text())["metrics"]
    assert summary["api_confidence/facepp"] == pytest.approx(float(conf.mean()), abs=1e-3)
    # answers without a face: protected faces, and clean ones twice (the restored face is the clean one)
    assert summary["api_no_face/facepp"] == float((expected["protected"] == 0).sum() + 2 * (expected["clean"] == 0).sum())


def test_evaluate_cli_scores_with_the_service_and_prints_table_iii(facepp, tmp_path, capsys):
    cfg = tiny_config(*TINY, "evaluation.commercial_apis.max_images=3", f"evaluation.commercial_apis.endpoints="
                      f"{{facepp: '{facepp.url}'}}", "evaluation.commercial_apis.qps={facepp: 1000}")
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(cfg))
    with projection_fr_models(cfg):
        code = main(["evaluate", str(config), "--method", "fgsm", "--apis", "facepp", "--no-track",
                     "--out", str(tmp_path / "out"), "--n-boot", "50", "--threads", "1"])
        expected = _expected(cfg, lambda x, xt: x)  # the clean faces' verdicts do not depend on the attack
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = read_records(tmp_path / "out" / "records.parquet")
    com = records[records["role"] == "commercial"]
    assert len(com) == 2 * 3 and len(facepp.requests) == 2 * 3  # fgsm cannot erase: protected and clean only
    assert com["api_confidence_restored"].isna().all()
    clean = com[com["kind"] == "clean"].set_index("sample").sort_index()
    np.testing.assert_allclose(clean["api_confidence"], expected["clean"], atol=1e-3)
    assert "commercial FR services (Table III)" in captured.out
    line = next(ln for ln in captured.out.splitlines() if ln.strip().startswith("facepp") and "fgsm" in ln)
    assert f"{com[com['kind'] == 'protected']['api_confidence'].mean():5.1f} [" in line
    for secret in SECRETS.values():
        assert secret not in captured.out + captured.err + (tmp_path / "out" / "evaluation.json").read_text()


def test_compare_scores_every_method_on_the_same_faces_and_keeps_credentials_out_of_mlflow(facepp, tmp_path,
                                                                                         capsys, monkeypatch):
    import yaml
    from mlflow.tracking import MlflowClient

    cfg = tiny_config(*TINY)
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(cfg))
    overrides = [f"evaluation.commercial_apis.endpoints={{facepp: '{facepp.url}'}}",
                 "evaluation.commercial_apis.qps={facepp: 1000}"]
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({"name": "t3", "config": str(config), "overrides": overrides, "n_boot": 50,
                                    "methods": {"fgsm": {"eps": 8 / 255}, "pgd": {"eps": 8 / 255, "steps": 1}}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    MlflowClient(uri).create_experiment(cfg.tracking.experiment_name, artifact_location=(tmp_path / "art").as_uri())
    with projection_fr_models(cfg):
        code = main(["compare", str(path), "--out", str(tmp_path / "out"), "--apis", "facepp",
                     "--api-max-images", "4", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rates = pd.read_csv(tmp_path / "out" / "comparison.csv")
    com = rates[(rates["role"] == "commercial") & (rates["rate"] == "api_confidence")]
    assert set(com["method"]) == {"fgsm", "pgd"} and set(com["n"]) == {4}
    samples = {m: set(read_records(tmp_path / "out" / m / "records.parquet").query("role == 'commercial'")["sample"])
               for m in ("fgsm", "pgd")}
    assert samples["fgsm"] == samples["pgd"] and len(samples["fgsm"]) == 4  # the same seeded faces
    clean = com[com["kind"] == "clean"].set_index("method")["value"]
    assert clean["fgsm"] == clean["pgd"]  # same clean faces, same verdicts
    table = (tmp_path / "out" / "table.txt").read_text()
    assert "commercial FR services (Table III)" in table and "ASR FAR 1e-4" in table
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment_name)
    runs = client.search_runs([exp.experiment_id])
    child = [r for r in runs if r.data.tags.get("method") == "fgsm"][0]
    fgsm_conf = com[(com["method"] == "fgsm") & (com["kind"] == "protected")]["value"].iloc[0]
    assert child.data.metrics["test/api_confidence/facepp"] == pytest.approx(100 * fgsm_conf, abs=1e-3)
    logged = json.dumps([[r.data.params, r.data.tags] for r in runs])
    for secret in SECRETS.values():
        assert secret not in logged and secret not in captured.out + captured.err


def test_missing_credentials_are_refused_in_one_line_before_any_image_is_protected(tmp_path, capsys, monkeypatch):
    for k in SECRETS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("FACEPP_API_KEY", "only-the-key")
    cfg = tiny_config(*TINY)
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(cfg))
    protected = []
    monkeypatch.setattr(Protection, "protect", lambda self, *a, **k: protected.append(1))
    assert main(["evaluate", str(config), "--method", "fgsm", "--apis", "facepp", "tencent", "--no-track",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "FACEPP_API_SECRET" in err and "TENCENTCLOUD_SECRET_ID" in err
    assert "only-the-key" not in err and not protected and not (tmp_path / "out").exists()
    path = tmp_path / "cmp.yaml"
    path.write_text(f"config: {config}\nmethods: {{fgsm: {{}}}}\n")
    assert main(["compare", str(path), "--apis", "aliyun", "--no-track", "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ALIBABA_CLOUD_ACCESS_KEY_ID" in err and not protected
    with pytest.raises(SystemExit) as exit_:  # refused by argparse
        main(["evaluate", str(config), "--method", "fgsm", "--apis", "facepp", "--api-max-images", "0", "--no-track"])
    assert exit_.value.code == 2 and "--api-max-images: 0 must be >= 1" in capsys.readouterr().err


def test_a_service_error_names_the_service_and_keeps_the_fr_results(facepp, tmp_path, monkeypatch):
    from erasablemask.experiments.errors import UserError
    from erasablemask.platform.evaluation_run import evaluate_and_write

    monkeypatch.setenv("FACEPP_API_SECRET", "wrong-secret")
    cfg = tiny_config(*TINY, "evaluation.commercial_apis.max_images=2")
    with projection_fr_models(cfg) as models, pytest.raises(UserError, match="facepp: AUTHENTICATION_ERROR") as err:
        evaluate_and_write(cfg, _Mirror(), tmp_path / "out", run="r", stage=None, models=models, n_boot=20,
                           progress=False, services={"facepp": FacePlusPlus(endpoint=facepp.url, qps=1000.0)})
    assert "wrong-secret" not in str(err.value) and str(tmp_path / "out") in str(err.value)
    records = read_records(tmp_path / "out" / "records.parquet")
    assert len(records) and (records["role"] != "commercial").all()
