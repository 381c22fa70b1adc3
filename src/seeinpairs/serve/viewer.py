"""The comparative viewer's endpoints: what the web page needs beyond ``POST /v1/diagnose``.

A clinician-researcher compares the query with the references the model saw, so the page needs the
query itself (DICOM decoded and windowed on the server), the references at a readable size with why
each was chosen, the question and its options, the single-image answer beside the comparative one,
and attribution overlays. It may choose the selector and k within :class:`~.schemas.ViewerSettings`
and name the references itself (a swap), so that a reader can watch the answer move.

Every endpoint is under ``/v1`` (the token applies), is stateless (the page sends the query again)
and follows the service's rules: the upload is checked and decoded through the service's decoder,
model calls hold the model lock, and no answer names a server path. Display windows change only what
the page shows; the model always sees the image as ``/v1/diagnose`` loads it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Form, Query
from fastapi.responses import Response
from pydantic import Field, field_validator
from PIL import Image

from ..backends.base import option_probabilities
from ..cases import Case
from ..errors import ConfigError, ImageError
from ..imaging import NAMED_WINDOWS, load_image
from ..prompts import PromptBuilder, Request
from ..references import create_selector
from ..references.selectors import DemographicSelector, EmbeddingSelector, Selector, attribute
from .errors import APIError
from .schemas import DiagnoseForm
from .service import Service, read_limited

#: what the page says about the probabilities it draws as bars
NORMALISATION = ("Probabilities are normalised over the closed set of options shown: they sum to 1 over "
                 "these options only and are not a calibrated risk.")
#: the query fields each selector reads (the page says which of age, sex and site are used)
SELECTOR_USES = {"random": [], "same_center": ["site"], "cross_center": ["site"], "embedding": ["image"],
                 "none": []}
#: the bank cases the page may list for a swap (a longer bank is still searchable by id)
BANK_LISTING = 1000
logger = logging.getLogger("seeinpairs.serve")
WindowName = Literal["lung", "soft_tissue", "bone", "brain"]


class ViewerForm(DiagnoseForm):
    """The diagnose form plus what the page chooses: selector, k, or the references themselves."""

    selector: str | None = Field(None, max_length=40, description="one of the viewer's selectors")
    k: int | None = Field(None, ge=0, description="references to select (at most viewer.max_k)")
    references: str | None = Field(None, max_length=4000,
                                   description="comma-separated bank case ids: these references, in this order")

    @field_validator("selector", "k", "references", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class PreviewForm(DiagnoseForm):
    """The query to preview and the display window (DICOM only; PNG and JPEG are shown as they are)."""

    window: WindowName | None = None

    @field_validator("window", mode="before")
    @classmethod
    def _native(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() in ("", "native") else value


def png_bytes(image: Image.Image, size: int) -> bytes:
    """``image`` as RGB PNG bytes, its longest side at most ``size``."""
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def is_dicom(path: str | Path) -> bool:
    """Whether a file is DICOM (by suffix or preamble): only DICOM takes a display window here."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def selector_uses(name: str, selector: Selector) -> list[str]:
    """The query fields a selector reads: what the page says next to its age, sex and site inputs."""
    if isinstance(selector, DemographicSelector):
        return [*selector.match, *([] if "age" in selector.match else ["age"])]
    return list(SELECTOR_USES.get(name, []))


class Viewer:
    """The viewer's selectors and the calls behind its endpoints, on top of one :class:`Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        settings = service.config.viewer
        self.settings = settings
        configured = service.config.selector
        wanted = dict(settings.selectors)
        if service.k > 0:
            wanted[configured.name] = configured.params  # the configured selector, with its own parameters
        self.selectors: dict[str, Selector] = {}
        for name, params in wanted.items():
            selector = create_selector(name, service.bank, **params)
            if not selector.leakage_free:
                raise ConfigError(f"viewer.selectors: '{name}' is not leakage-free; the page offers only "
                                  "selectors that never show the query's own patient")
            self.selectors[name] = selector
        self.default = service.selector_name if service.selector_name in self.selectors else next(iter(self.selectors))
        self.positions = {case.case_id: i for i, case in enumerate(service.bank)}

    # ----- what the page may choose -------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        service, task = self.service, self.service.task
        return {"model": service.model_name, "question": task.question, "options": list(task.classes),
                "healthy_class": task.healthy_class, "modality": task.modality,
                "default_selector": self.default, "default_k": min(service.k, self.max_k),
                "max_k": self.max_k, "bank_size": len(service.bank),
                "selectors": [{"name": name, "uses": selector_uses(name, selector),
                               "description": summary(type(selector).__doc__)}
                              for name, selector in self.selectors.items()],
                "windows": list(NAMED_WINDOWS), "explain_method": self.settings.explain_method,
                "normalisation": NORMALISATION}

    @property
    def max_k(self) -> int:
        return min(self.settings.max_k, len(self.service.bank))

    def bank(self) -> dict[str, Any]:
        cases = list(self.service.bank)
        return {"total": len(cases), "cases": [{"case_id": c.case_id, "age": c.age, "sex": c.sex, "site": c.site}
                                               for c in cases[:BANK_LISTING]]}

    # ----- images -----------------------------------------------------------------------------------
    def load_window(self, path: Path, window: str | None) -> Image.Image:
        try:
            with self.service.decoder.slot():
                return load_image(path, window if window and is_dicom(path) else None)
        except ImageError as exc:
            raise APIError(422, str(exc).replace(str(path), "uploaded image"), "invalid_image") from None

    def preview(self, data: bytes, filename: str | None, window: str | None) -> tuple[bytes, str]:
        """The decoded query as PNG (DICOM in ``window``, else its own), and the window applied."""
        with tempfile.TemporaryDirectory(prefix="seeinpairs-") as folder:
            path = self.service.decoder.to_file(data, filename, folder)
            applied = (window or "native") if is_dicom(path) else "none"
            return png_bytes(self.load_window(path, window), self.settings.image_size), applied

    def reference_png(self, case_id: str, window: str | None) -> bytes:
        """A bank reference as PNG at the viewer's size; a DICOM one in ``window``."""
        case = self.case(case_id)
        if not (window and is_dicom(case.image)):
            return png_bytes(self.service.load_reference(case.image), self.settings.image_size)
        try:
            with self.service.decoder.slot():
                image = load_image(case.image, window)
        except ImageError as exc:  # a broken bank file is the server's fault: the log names it, the answer not
            logger.error("reference image unreadable: %s", exc)
            raise APIError(500, "a reference image cannot be read (the server log names it)", "server_error") from None
        return png_bytes(image, self.settings.image_size)

    def case(self, case_id: str) -> Case:
        position = self.positions.get(case_id)
        if position is None:
            raise APIError(404, f"no reference case '{case_id[:80]}' in the bank", "not_found")
        return self.service.bank.cases[position]

    # ----- the comparison -----------------------------------------------------------------------------
    def choose(self, form: ViewerForm, query: Case, data: bytes) -> tuple[str, list[Case], str | None, bool]:
        """The selector's name, the references, its note, and whether the request named them."""
        name = form.selector or self.default
        if name not in self.selectors:
            raise APIError(400, f"selector '{name[:40]}' is not offered here (choose one of "
                                f"{', '.join(self.selectors)})", "invalid_request_error")
        if form.references is not None:
            ids = [part.strip() for part in form.references.split(",") if part.strip()]
            if len(set(ids)) != len(ids):
                raise APIError(400, "references: each case may be shown once", "invalid_request_error")
            if len(ids) > self.max_k:
                raise APIError(400, f"references: at most {self.max_k} may be shown", "invalid_request_error")
            return name, [self.case(i) for i in ids], None, True
        k = min(self.service.k, self.max_k) if form.k is None else form.k
        if k > self.max_k:
            raise APIError(400, f"k must be at most {self.max_k} here", "invalid_request_error")
        seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
        rng = np.random.default_rng([self.service.config.selector.seed, seed])  # as /v1/diagnose draws
        selection = self.selectors[name].select(query, k, rng)
        return name, selection.references, selection.note, False

    def reasons(self, name: str, query: Case, references: list[Case], named: bool) -> list[dict[str, Any]]:
        """Each reference with its age, sex, site and why it is shown (cosine distance for embedding)."""
        selector = self.selectors[name]
        distances: list[float | None] = [None] * len(references)
        if isinstance(selector, EmbeddingSelector) and references:
            vector = self.service.bank.embed_query(query, selector.embedder)
            bank = self.service.bank.embeddings(selector.embedder)
            distances = [float(1.0 - bank[self.positions[r.case_id]] @ vector) for r in references]
        return [{"case_id": r.case_id, "age": r.age, "sex": r.sex, "site": r.site, "distance": distance,
                 "chosen_by": "request" if named else name,
                 "reason": self.reason(name, selector, query, r, distance, named)}
                for r, distance in zip(references, distances)]

    @staticmethod
    def reason(name: str, selector: Selector, query: Case, case: Case, distance: float | None, named: bool) -> str:
        if named:
            why = "chosen in the page (a swap)"
            return why if distance is None else f"{why}; cosine distance {distance:.3f} to the query"
        if distance is not None:
            return f"nearest by the '{name}' selector: cosine distance {distance:.3f} to the query"
        if isinstance(selector, DemographicSelector):
            parts = []
            for name_ in selector.match:
                mine, wanted = attribute(case, name_), attribute(query, name_)
                parts.append(f"{name_} {mine} ({'matches' if mine == wanted else f'query {wanted}'})")
            if query.age is not None and case.age is not None:
                parts.append(f"age {case.age:g} ({abs(case.age - query.age):g} years from the query)")
            return "demographic match: " + ", ".join(parts)
        if name == "same_center":
            return f"random healthy control from the query's site ({case.site})"
        if name == "cross_center":
            return f"random healthy control from another site ({case.site}) than the query's ({query.site})"
        return f"drawn at random from the healthy controls by the '{name}' selector"

    def requests(self, form: ViewerForm, data: bytes, folder: str) -> tuple[Case, dict[str, Any], Request, Request]:
        """The query, the selection record, and the paired and single-image requests."""
        path = self.service.decoder.to_file(data, form.image.filename, folder)
        image = self.service.decoder.load(path)
        fresh = uuid.uuid4().hex
        query = Case(case_id=f"query-{fresh}", images=(str(path),), patient_id=f"query-patient-{fresh}",
                     age=form.age, sex=form.sex, site=form.site, split="query")
        name, references, note, named = self.choose(form, query, data)

        def loader(source: str) -> Image.Image:
            return image if source == str(path) else self.service.load_reference(source)

        builder = PromptBuilder(self.service.task, image_loader=loader)
        selection = {"selector": name, "k": len(references), "selection_note": note,
                     "references": self.reasons(name, query, references, named),
                     "query": {"width": image.width, "height": image.height, "dicom": is_dicom(path)}}
        return query, selection, builder.build(query, references), builder.build(query)

    def diagnose(self, form: ViewerForm, data: bytes) -> dict[str, Any]:
        """The paired and the single-image answer for one upload, scored one after the other."""
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="seeinpairs-") as folder:
            _, selection, paired, single = self.requests(form, data, folder)
            with self.service.lock:
                paired_scores = self.service.backend.score_options([paired])[0]
                single_scores = (self.service.backend.score_options([single])[0] if paired.n_images > 1
                                 else paired_scores)
        return {"question": self.service.task.question, "options": list(paired.options),
                "normalisation": NORMALISATION, "model": self.service.model_name, **selection,
                "paired": answer(paired.options, paired_scores), "single": answer(single.options, single_scores),
                "seconds": round(time.perf_counter() - start, 4)}

    def explain(self, form: ViewerForm, data: bytes) -> dict[str, Any]:
        """Per-image attribution overlays toward the paired answer, and the share on the references."""
        from ..explain.attribution import RequestExplainer
        from ..explain.layouts import ExplainError
        from ..explain.overlay import overlay_image

        method = self.settings.explain_method
        backend = self.service.backend
        if not (hasattr(backend, "model") and hasattr(backend, "processor")):
            raise APIError(501, "attribution overlays need a model loaded in this server (the hf backend)",
                           "not_supported")
        with tempfile.TemporaryDirectory(prefix="seeinpairs-") as folder:
            _, selection, paired, _ = self.requests(form, data, folder)
            try:
                with self.service.lock:
                    explanation = RequestExplainer.from_backend(backend).explain(paired, methods=(method,))
            except ExplainError as exc:
                raise APIError(501, f"this model cannot be explained here: {self.service.public(exc)}",
                               "not_supported") from None
        shares = explanation.image_mass[method]
        ids = [r["case_id"] for r in selection["references"]] + ["query"]
        images = [{"case_id": case_id, "share": share,
                   "overlay": data_url(png_bytes(overlay_image(image, values), self.settings.image_size))}
                  for case_id, share, image, values in zip(ids, shares, paired.images, explanation.maps[method])]
        on_references = explanation.reference_share(method) if len(images) > 1 else 0.0
        return {"method": method, "option": explanation.option, "reference_share": on_references, "images": images,
                "selector": selection["selector"], "references": selection["references"]}


def summary(docstring: str | None) -> str:
    """A docstring's first line as plain text (no reStructuredText literals) for the page."""
    return (docstring or "").strip().split("\n")[0].replace("``", "")


def answer(options: list[str], scores: list[float]) -> dict[str, Any]:
    probabilities = option_probabilities(scores)
    return {"answer": options[int(np.argmax(probabilities))],
            "probabilities": {o: float(p) for o, p in zip(options, probabilities)},
            "log_likelihoods": {o: float(s) for o, s in zip(options, scores)}}


def viewer_router(service: Service) -> APIRouter:
    """The viewer's endpoints for ``service`` (included by :func:`~.app.create_app`)."""
    viewer = Viewer(service)
    router = APIRouter(prefix="/v1/viewer", tags=["viewer"])

    def upload(form: DiagnoseForm) -> bytes:
        if form.image is None:
            raise APIError(400, "no image: send the query as the multipart field 'image'", "missing_file")
        return read_limited(form.image, service.config.max_upload_bytes)

    @router.get("/config")
    def config() -> dict[str, Any]:
        """The question, options, selectors (and the query fields each uses), k limit and display windows."""
        return viewer.config()

    @router.get("/bank")
    def bank() -> dict[str, Any]:
        """The bank's cases (id, age, sex, site) a reference may be swapped for."""
        return viewer.bank()

    @router.post("/preview", responses={200: {"content": {"image/png": {}}}})
    def preview(form: Annotated[PreviewForm, Form()]) -> Response:
        """The uploaded query decoded as PNG; DICOM in the chosen display window."""
        png, applied = viewer.preview(upload(form), form.image.filename, form.window)
        return Response(png, media_type="image/png", headers={"X-Window": applied, "Cache-Control": "no-store"})

    @router.get("/references/{case_id}/image", responses={200: {"content": {"image/png": {}}}})
    def reference(case_id: str, window: Annotated[WindowName | None, Query()] = None) -> Response:
        """A bank reference at the viewer's size (DICOM references in the chosen display window)."""
        return Response(viewer.reference_png(case_id, window), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @router.post("/diagnose")
    def diagnose(form: Annotated[ViewerForm, Form()]) -> dict[str, Any]:
        """The comparative and the single-image answer for one query, with why each reference is shown."""
        return viewer.diagnose(form, upload(form))

    @router.post("/explain")
    def explain(form: Annotated[ViewerForm, Form()]) -> dict[str, Any]:
        """Attribution overlays per image toward the comparative answer (slower: a backward pass)."""
        return viewer.explain(form, upload(form))

    return router
