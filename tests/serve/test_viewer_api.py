"""The comparative viewer's endpoints (``/v1/viewer/...``) through the ASGI app, checked against in-process results."""

import io

import numpy as np
import pydicom.data
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from shared_helpers import SERVE_TOKEN, serve_config

from seeinpairs.backends.base import option_probabilities
from seeinpairs.cases import Case
from seeinpairs.errors import ConfigError
from seeinpairs.explain.attribution import RequestExplainer
from seeinpairs.prompts import PromptBuilder

AUTH = {"Authorization": f"Bearer {SERVE_TOKEN}"}
CT = pydicom.data.get_testdata_file("CT_small.dcm")


@pytest.fixture(scope="module")
def client(served_app):
    return TestClient(served_app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def query(synthetic_data):
    _, table, _ = synthetic_data
    case = next(c for c in table if c.split == "test")
    return case, open(case.image, "rb").read()


def bank_ids(synthetic_data) -> list[str]:
    _, table, task = synthetic_data
    return [c.case_id for c in table if c.label == task.healthy_class and c.split == "train"]


def post(client, path, data, form=None, name="q.png"):
    return client.post(path, files={"image": (name, data, "application/octet-stream")}, data=form or {}, headers=AUTH)


def error(response, status) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


def test_config_says_question_options_limits_and_which_fields_each_selector_uses(client, synthetic_data):
    _, _, task = synthetic_data
    assert client.get("/v1/viewer/config").status_code == 401  # the token applies to the viewer too
    config = client.get("/v1/viewer/config", headers=AUTH).json()
    assert config["question"] == task.question and config["options"] == task.classes
    assert config["default_selector"] == "random" and config["default_k"] == 2 and config["max_k"] == 4
    uses = {s["name"]: s["uses"] for s in config["selectors"]}
    assert uses["random"] == [] and uses["demographic"] == ["sex", "age"] and uses["same_center"] == ["site"]
    assert all(s["description"] and "``" not in s["description"] for s in config["selectors"])
    assert set(config["windows"]) == {"lung", "soft_tissue", "bone", "brain"}
    assert "closed set" in config["normalisation"]
    bank = client.get("/v1/viewer/bank", headers=AUTH).json()
    assert [c["case_id"] for c in bank["cases"]] == bank_ids(synthetic_data) and bank["total"] == len(bank["cases"])


def test_paired_matches_v1_diagnose_and_single_is_the_query_alone(client, synthetic_data, served_backend, query):
    _, table, task = synthetic_data
    case, data = query
    plain = post(client, "/v1/diagnose", data, {"sex": "F"}).json()
    result = post(client, "/v1/viewer/diagnose", data, {"sex": "F"}).json()
    assert [r["case_id"] for r in result["references"]] == plain["references"]  # the same draw
    assert result["paired"]["probabilities"] == pytest.approx(plain["probabilities"], abs=1e-6)
    assert result["question"] == task.question and result["options"] == task.classes
    single = PromptBuilder(task).build(Case("q", (case.image,)))
    expected = option_probabilities(served_backend.score_options([single])[0])
    assert [result["single"]["probabilities"][o] for o in task.classes] == pytest.approx(expected, abs=1e-5)
    for ref in result["references"]:
        bank_case = table.get(ref["case_id"])
        assert (ref["age"], ref["sex"], ref["site"]) == (bank_case.age, bank_case.sex, bank_case.site)
        assert ref["chosen_by"] == "random" and "at random" in ref["reason"] and ref["distance"] is None


def test_selector_and_k_within_limits_with_reasons(client, query):
    _, data = query
    result = post(client, "/v1/viewer/diagnose", data, {"selector": "demographic", "k": "3", "sex": "F",
                                                        "age": "60"}).json()
    assert result["k"] == 3 and result["selector"] == "demographic"
    assert all(r["sex"] == "F" and "sex F (matches)" in r["reason"] and "years from the query" in r["reason"]
               for r in result["references"])
    alone = post(client, "/v1/viewer/diagnose", data, {"k": "0"}).json()
    assert alone["references"] == [] and alone["paired"] == alone["single"]
    assert "at most 4" in error(post(client, "/v1/viewer/diagnose", data, {"k": "5"}), 400)
    assert "not offered" in error(post(client, "/v1/viewer/diagnose", data, {"selector": "prior_study"}), 400)
    assert "site" in error(post(client, "/v1/viewer/diagnose", data, {"selector": "same_center"}), 400)


def test_named_references_are_shown_in_order_and_move_the_answer(client, synthetic_data, served_backend, query):
    _, table, task = synthetic_data
    case, data = query
    ids = bank_ids(synthetic_data)
    first = post(client, "/v1/viewer/diagnose", data, {"references": f"{ids[0]},{ids[1]}"}).json()
    swapped = post(client, "/v1/viewer/diagnose", data, {"references": f"{ids[0]},{ids[5]}"}).json()
    assert [r["case_id"] for r in swapped["references"]] == [ids[0], ids[5]]
    assert all(r["chosen_by"] == "request" and "chosen in the page" in r["reason"] for r in swapped["references"])
    request = PromptBuilder(task).build(Case("q", (case.image,)), [table.get(ids[0]), table.get(ids[5])])
    expected = option_probabilities(served_backend.score_options([request])[0])
    assert [swapped["paired"]["probabilities"][o] for o in task.classes] == pytest.approx(expected, abs=1e-5)
    assert swapped["paired"]["probabilities"] != first["paired"]["probabilities"]
    assert swapped["single"]["probabilities"] == pytest.approx(first["single"]["probabilities"])
    assert "no reference case 'nope'" in error(post(client, "/v1/viewer/diagnose", data, {"references": "nope"}), 404)
    assert "once" in error(post(client, "/v1/viewer/diagnose", data, {"references": f"{ids[0]},{ids[0]}"}), 400)
    assert "at most 4" in error(post(client, "/v1/viewer/diagnose", data, {"references": ",".join(ids[:5])}), 400)


def test_embedding_selector_reports_the_cosine_distance(synthetic_data, tiny_models, served_backend, query):
    from seeinpairs.embeddings.images import create_embedder
    from seeinpairs.serve.app import create_app

    _, table, _ = synthetic_data
    case, data = query
    viewer = {"selectors": {"embedding": {"embedder": "pixel"}}}
    app = create_app(serve_config(synthetic_data, tiny_models, viewer=viewer), backend_factory=lambda _: served_backend)
    client = TestClient(app, raise_server_exceptions=False)
    config = client.get("/v1/viewer/config", headers=AUTH).json()
    assert [s["name"] for s in config["selectors"]] == ["embedding", "random"]
    result = post(client, "/v1/viewer/diagnose", data, {"selector": "embedding", "k": "2"}).json()
    embedder = create_embedder("pixel")
    vector = embedder.embed([Image.open(case.image).convert("RGB")])[0]
    distances = []
    for ref in result["references"]:
        other = embedder.embed([Image.open(table.get(ref["case_id"]).image).convert("RGB")])[0]
        cosine = float(vector @ other / np.linalg.norm(vector) / np.linalg.norm(other))
        assert ref["distance"] == pytest.approx(1 - cosine, abs=1e-4)
        assert f"cosine distance {ref['distance']:.3f}" in ref["reason"]
        distances.append(ref["distance"])
    assert distances == sorted(distances)  # nearest first


def test_viewer_selectors_must_be_leakage_free_and_known(synthetic_data, tiny_models, served_backend):
    from seeinpairs.serve.app import create_app

    with pytest.raises(ConfigError, match="leakage-free"):
        create_app(serve_config(synthetic_data, tiny_models, viewer={"selectors": {"prior_study": {}}}),
                   backend_factory=lambda _: served_backend)
    with pytest.raises(ConfigError, match="unknown"):
        create_app(serve_config(synthetic_data, tiny_models, viewer={"selectors": {"demographic": {"bogus": 1}}}),
                   backend_factory=lambda _: served_backend)


def pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=float)


def test_dicom_preview_in_each_window_and_png_as_it_is(client, query):
    data = open(CT, "rb").read()
    native = pixels(post(client, "/v1/viewer/preview", data, name="ct.dcm"))
    lung = post(client, "/v1/viewer/preview", data, {"window": "lung"}, name="ct.dcm")
    assert lung.headers["x-window"] == "lung"
    bone, brain = (pixels(post(client, "/v1/viewer/preview", data, {"window": w}, name="ct.dcm"))
                   for w in ("bone", "brain"))
    assert native.shape == pixels(lung).shape == (128, 128)
    assert len({a.tobytes() for a in (native, pixels(lung), bone, brain)}) == 4  # each window shows other pixels
    assert brain.std() > 0 and (brain == 255).mean() > (bone == 255).mean()  # the narrow window saturates more
    _, png = query
    shown = post(client, "/v1/viewer/preview", png, {"window": "lung"})
    assert shown.headers["x-window"] == "none"
    assert pixels(shown).shape == np.asarray(Image.open(io.BytesIO(png))).shape[:2]
    assert "window" in error(post(client, "/v1/viewer/preview", data, {"window": "liver"}, name="ct.dcm"), 422)
    assert "unsupported image type" in error(post(client, "/v1/viewer/preview", b"not an image", name="x.txt"), 415)


def test_dicom_query_is_diagnosed(client):
    result = post(client, "/v1/viewer/diagnose", open(CT, "rb").read(), name="ct.dcm").json()
    assert result["query"] == {"width": 128, "height": 128, "dicom": True} and len(result["references"]) == 2


def test_reference_images_at_the_viewer_size(client, synthetic_data):
    ids = bank_ids(synthetic_data)
    image = pixels(client.get(f"/v1/viewer/references/{ids[0]}/image?window=bone", headers=AUTH))
    assert max(image.shape) <= 512 and image.std() > 0
    assert "window" in error(client.get(f"/v1/viewer/references/{ids[0]}/image?window=x", headers=AUTH), 422)
    assert error(client.get("/v1/viewer/references/nope/image", headers=AUTH), 404)


def test_overlays_per_image_with_the_share_on_the_references(client, synthetic_data, served_backend, query):
    _, table, task = synthetic_data
    case, data = query
    ids = bank_ids(synthetic_data)[:2]
    explained = post(client, "/v1/viewer/explain", data, {"references": ",".join(ids)}).json()
    assert explained["method"] == "grad_x_input" and [i["case_id"] for i in explained["images"]] == [*ids, "query"]
    shares = [i["share"] for i in explained["images"]]
    assert sum(shares) == pytest.approx(1.0) and explained["reference_share"] == pytest.approx(sum(shares[:2]))
    request = PromptBuilder(task).build(Case("q", (case.image,)), [table.get(i) for i in ids])
    expected = RequestExplainer.from_backend(served_backend).explain(request, methods=("grad_x_input",))
    assert explained["reference_share"] == pytest.approx(expected.reference_share("grad_x_input"), abs=1e-4)
    assert explained["option"] == expected.option
    import base64

    for item, image in zip(explained["images"], request.images):
        header, payload = item["overlay"].split(",", 1)
        assert header == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(payload))).size == image.size


class FixedScores:
    """A backend without a model in this process (e.g. one behind an HTTP API): it scores, it cannot explain."""

    def score_options(self, requests):
        return [[-1.0 - 0.1 * request.n_images, -2.0] for request in requests]


def test_overlays_need_a_local_model_and_say_so(synthetic_data, tiny_models, query):
    from seeinpairs.serve.app import create_app

    _, data = query
    client = TestClient(create_app(serve_config(synthetic_data, tiny_models), backend_factory=lambda _: FixedScores()),
                        raise_server_exceptions=False)
    result = post(client, "/v1/viewer/diagnose", data).json()
    assert result["paired"]["log_likelihoods"]["normal"] == pytest.approx(-1.3)  # two references and the query
    assert result["single"]["log_likelihoods"]["normal"] == pytest.approx(-1.1)
    assert "need a model loaded in this server" in error(post(client, "/v1/viewer/explain", data), 501)
