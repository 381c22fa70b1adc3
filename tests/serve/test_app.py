import io
import json

import numpy as np
import pytest
from shared_helpers import SERVE_TOKEN, serve_config
from fastapi.testclient import TestClient
from PIL import Image

from seeinpairs.backends.base import option_probabilities
from seeinpairs.cases import Case
from seeinpairs.errors import ConfigError
from seeinpairs.prompts import PromptBuilder

AUTH = {"Authorization": f"Bearer {SERVE_TOKEN}"}


def png_bytes(size=(48, 48), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((size[1], size[0])) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(served_app):
    return TestClient(served_app, raise_server_exceptions=False)


def assert_clean_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]["message"]


def test_healthz_and_openapi(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["k"] == 2 and health["bank_size"] > 2
    schema = client.get("/openapi.json").json()
    assert {"/v1/diagnose", "/v1/chat/completions", "/healthz", "/v1/references/{case_id}/image"} <= set(schema["paths"])


def test_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "v1/diagnose" in page.text


def test_diagnose_matches_in_process_scoring(client, synthetic_data, served_backend):
    root, table, task = synthetic_data
    query = next(c for c in table if c.split == "test")
    data = open(query.image, "rb").read()
    response = client.post("/v1/diagnose", files={"image": ("q.png", data, "image/png")},
                           data={"age": "60", "sex": "female"}, headers=AUTH)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result["probabilities"]) == set(task.classes)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0)
    assert result["answer"] == max(result["probabilities"], key=result["probabilities"].get)
    assert len(result["references"]) == 2 and result["selector"] == "random"
    bank_ids = {c.case_id for c in table if c.label == task.healthy_class and c.split == "train"}
    assert set(result["references"]) <= bank_ids
    # the same references in process give the same probabilities
    refs = [table.get(i) for i in result["references"]]
    request = PromptBuilder(task).build(Case("q", (query.image,)), refs)
    expected = option_probabilities(served_backend.score_options([request])[0])
    assert np.allclose([result["probabilities"][o] for o in task.classes], expected, atol=1e-5)
    # a reference thumbnail
    thumb = client.get(f"/v1/references/{result['references'][0]}/image", headers=AUTH)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size[0] <= 256
    assert_clean_error(client.get("/v1/references/not-a-case/image", headers=AUTH), 404)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": SERVE_TOKEN}])
def test_auth_is_enforced(client, headers):
    for response in (client.post("/v1/diagnose", files={"image": ("q.png", png_bytes(), "image/png")}, headers=headers),
                     client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                                 headers=headers),
                     client.get("/v1/models", headers=headers)):
        assert_clean_error(response, 401)
    assert client.get("/healthz").status_code == 200  # health stays open


def test_bad_uploads_are_clear_4xx(client, tmp_path):
    def post(name, data, mime="application/octet-stream"):
        return client.post("/v1/diagnose", files={"image": (name, data, mime)}, headers=AUTH)

    assert "PNG, JPEG or DICOM" in assert_clean_error(post("notes.txt", b"just some text"), 415)
    message = assert_clean_error(post("scan.dcm", b"this is a text file, not DICOM" * 10), 422)
    assert "DICOM" in message and "/tmp" not in message
    corrupt = png_bytes()[:60]
    assert_clean_error(post("broken.png", corrupt, "image/png"), 422)
    assert "image" in assert_clean_error(client.post("/v1/diagnose", data={"age": "3"}, headers=AUTH), 400)
    assert_clean_error(client.post("/v1/diagnose", files={"image": ("q.png", png_bytes(), "image/png")},
                                   data={"age": "old"}, headers=AUTH), 422)


def test_upload_and_pixel_limits(synthetic_data, tiny_models, served_backend):
    from seeinpairs.serve.app import create_app

    config = serve_config(synthetic_data, tiny_models, max_upload_bytes=5000, max_pixels=100 * 100)
    small = TestClient(create_app(config, backend_factory=lambda _: served_backend), raise_server_exceptions=False)
    big_file = png_bytes((120, 120))  # random pixels compress badly: > 5000 bytes
    assert len(big_file) > 5000
    assert "limit" in assert_clean_error(
        small.post("/v1/diagnose", files={"image": ("q.png", big_file, "image/png")}, headers=AUTH), 413)
    # many pixels, few bytes (a decompression bomb in miniature)
    buffer = io.BytesIO()
    Image.new("L", (400, 400)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 5000
    message = assert_clean_error(
        small.post("/v1/diagnose", files={"image": ("q.png", buffer.getvalue(), "image/png")}, headers=AUTH), 413)
    assert "pixels" in message


def test_chat_completions_logprobs_and_generation(client, synthetic_data, served_backend):
    import base64

    root, table, task = synthetic_data
    url = "data:image/png;base64," + base64.b64encode(open(table[0].image, "rb").read()).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": task.question}]}]
    response = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1, "logprobs": True,
                                                         "top_logprobs": 5}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    first = body["choices"][0]["logprobs"]["content"][0]
    top = first["top_logprobs"]
    assert len(top) == 5 and top[0]["logprob"] >= top[-1]["logprob"]
    assert first["token"] == top[0]["token"] == body["choices"][0]["message"]["content"]
    assert sum(np.exp([t["logprob"] for t in top])) <= 1.0 + 1e-6
    text = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 3}, headers=AUTH).json()
    assert isinstance(text["choices"][0]["message"]["content"], str) and text["usage"]["completion_tokens"] <= 3
    assert_clean_error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.org/x.png"}}]}]}, headers=AUTH), 400)
    assert_clean_error(client.post("/v1/chat/completions", json={"messages": []}, headers=AUTH), 400)
    assert_clean_error(client.post("/v1/chat/completions", content=b"{not json", headers={
        **AUTH, "content-type": "application/json"}), 400)


def test_unexpected_errors_are_generic_500(synthetic_data, tiny_models, served_backend, caplog):
    from seeinpairs.serve.app import create_app

    class Broken:
        def __getattr__(self, name):
            return getattr(served_backend, name)

        def score_options(self, requests):
            raise RuntimeError("secret internal detail PatientName=DOE^JOHN")

    app = create_app(serve_config(synthetic_data, tiny_models), backend_factory=lambda _: Broken())
    client = TestClient(app, raise_server_exceptions=False)
    response = client.post("/v1/diagnose", files={"image": ("q.png", png_bytes(), "image/png")}, headers=AUTH)
    message = assert_clean_error(response, 500)
    assert "secret" not in response.text and message == "internal server error"
    assert "DOE^JOHN" not in caplog.text


def test_dicom_upload_identifiers_not_logged(client, caplog, tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "q.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName, ds.PatientID = "DOE^JANE", "PID-998877"
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = (np.arange(32 * 32, dtype=np.uint16) * 7).tobytes()
    ds.save_as(tmp_path / "q.dcm", enforce_file_format=True)
    caplog.set_level("DEBUG")
    response = client.post("/v1/diagnose", files={"image": ("q.dcm", (tmp_path / "q.dcm").read_bytes())},
                           headers=AUTH)
    assert response.status_code == 200, response.text
    assert "DOE" not in caplog.text and "PID-998877" not in caplog.text
    assert "DOE" not in response.text and "PID-998877" not in response.text
    json.dumps(response.json())


def test_sex_age_and_site_are_validated_as_form_fields(client):
    def post(**fields):
        return client.post("/v1/diagnose", files={"image": ("q.png", png_bytes(), "image/png")}, data=fields,
                           headers=AUTH)

    message = assert_clean_error(post(sex="X"), 422)
    assert message.startswith("sex: ") and "'X' is not a sex" in message
    assert assert_clean_error(post(age="-1"), 422).startswith("age: ")
    assert assert_clean_error(post(site="s" * 1000), 422).startswith("site: ")
    assert post(sex="female", age="", site="").status_code == 200  # blank fields are absent fields


def test_text_only_chat_completion(client):
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}],
                                                         "max_tokens": 2}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["choices"][0]["message"]["content"], str) and body["usage"]["prompt_tokens"] > 0


def test_prompt_token_limit(synthetic_data, tiny_models, served_backend):
    from seeinpairs.serve.app import create_app

    limited = TestClient(create_app(serve_config(synthetic_data, tiny_models, max_prompt_tokens=64),
                                    backend_factory=lambda _: served_backend), raise_server_exceptions=False)
    long = {"messages": [{"role": "user", "content": "normal abnormal " * 200}], "max_tokens": 1}
    message = assert_clean_error(limited.post("/v1/chat/completions", json=long, headers=AUTH), 400)
    assert "max_prompt_tokens=64" in message and "tokens" in message
    short = {"messages": [{"role": "user", "content": "normal"}], "max_tokens": 1}
    assert limited.post("/v1/chat/completions", json=short, headers=AUTH).status_code == 200


def test_concurrent_decodes_are_bounded(synthetic_data, tiny_models, served_backend, monkeypatch):
    import threading

    from seeinpairs.serve import service as service_module

    service = service_module.Service(serve_config(synthetic_data, tiny_models, max_concurrent_decodes=2),
                                 backend_factory=lambda _: served_backend)
    active, peak, changed = 0, 0, threading.Condition()
    real_load = service_module.load_image

    def slow_load(path, *args, **kwargs):
        """Stay inside until three decodes run at once (unbounded decodes would) or a while has passed."""
        nonlocal active, peak
        with changed:
            active += 1
            peak = max(peak, active)
            changed.notify_all()
            changed.wait_for(lambda: active >= 3, timeout=0.5)
            active -= 1
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(service_module, "load_image", slow_load)
    start = threading.Barrier(6)

    def decode():
        start.wait(timeout=30)
        service.decoder.decode(png_bytes())

    threads = [threading.Thread(target=decode) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert 1 <= peak <= 2


def test_responses_do_not_show_server_paths(synthetic_data, tiny_models, served_backend, tmp_path):
    import shutil

    from seeinpairs.serve.app import create_app

    root, table, task = synthetic_data
    bank_case = next(c for c in table if c.split == "train" and c.label == task.healthy_class)
    # a copy of the data set whose first bank image is broken on disk
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    broken = copy / __import__("pathlib").Path(bank_case.image).relative_to(root)
    broken.write_bytes(b"not an image any more")
    config = serve_config((copy, table, task), tiny_models)

    class RejectingProcessor:
        def __init__(self, processor):
            self._processor = processor

        def __getattr__(self, name):
            return getattr(self._processor, name)

        def __call__(self, *args, **kwargs):
            raise ValueError(f"cannot process {tiny_models['qwen2_vl']}/preprocessor_config.json")

    class Backend:
        def __getattr__(self, name):
            if name == "processor":
                return RejectingProcessor(served_backend.processor)
            return getattr(served_backend, name)

    client = TestClient(create_app(config, backend_factory=lambda _: Backend()), raise_server_exceptions=False)
    secrets = [str(copy), str(tiny_models["qwen2_vl"]), str(tmp_path), bank_case.image]
    responses = [client.get(f"/v1/references/{bank_case.case_id}/image", headers=AUTH),
                 client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                             headers=AUTH)]
    for response in responses:
        assert 400 <= response.status_code < 600 and response.json()["error"]["message"]
        for secret in secrets:
            assert secret not in response.text, response.text


def test_serve_config_docstring_example_is_valid():
    import textwrap

    import yaml

    from seeinpairs.serve.schemas import ServeConfig

    block = ServeConfig.__doc__.split(".. code-block:: yaml")[1]
    config = yaml.safe_load(textwrap.dedent(block))
    assert config["task"]["question"].endswith("?")
    ServeConfig.from_dict(config)


def test_the_service_builds_its_model_through_the_factory_from_the_served_config(synthetic_data, tiny_models,
                                                                                 served_backend):
    from seeinpairs.serve.app import create_app
    from seeinpairs.settings import ModelConfig

    seen = []
    app = create_app(serve_config(synthetic_data, tiny_models),
                     backend_factory=lambda model: seen.append(model) or served_backend)
    assert app.state.service.backend is served_backend
    assert isinstance(seen[0], ModelConfig) and seen[0].name == str(tiny_models["qwen2_vl"])
    assert (seen[0].label, seen[0].device, seen[0].backend) == ("tiny", "cpu", "hf")  # the CPU unless told
    with pytest.raises(ConfigError, match="field 'model': a served model has no 'conditions'"):
        serve_config(synthetic_data, tiny_models, model={"name": "m", "conditions": [{"selector": "none", "k": 0}]})
