"""At which resolution a prompt's images reach the model, where that depends on how many images it holds.

LLaVA-OneVision encodes the image of a one-image prompt at "anyres" (a base
view plus high-resolution tiles) but every image of a several-image prompt at
base resolution only: its image processor and model switch on the number of
images per prompt (``batch_num_images``). So the query of a single-image
condition and the query of a paired one are not seen alike.

The difference is recorded, not removed. Forcing base resolution on one-image
prompts is not something the checkpoint's processor offers, and it would
evaluate the single-image condition below what the model was trained and
published to do: the single baseline a researcher compares against is the
model as released. Each prediction therefore carries ``query_resolution``
(``anyres`` or ``base``), and the report states it when the conditions of a
model differ. Families whose resolution does not depend on the image count get
no record.
"""

from __future__ import annotations

from ..prompts import Request

#: the image-processor output that marks a resolution switched by the number of images per prompt
_SWITCH = "batch_num_images"


def resolution_depends_on_image_count(processor) -> bool:
    """True for processors (LLaVA-OneVision) that tile one image but not several."""
    image_processor = getattr(processor, "image_processor", None)
    return _SWITCH in (getattr(image_processor, "model_input_names", None) or ())


def query_resolution(processor, request: Request) -> str | None:
    """``anyres`` or ``base`` for such processors (by the request's image count), else None."""
    if not resolution_depends_on_image_count(processor) or not request.images:
        return None
    return "anyres" if request.n_images == 1 else "base"


def resolution_records(processor, requests: list[Request]) -> list[dict]:
    """Per request, ``{"query_resolution": ...}`` where it depends on the image count; [] where it never does."""
    values = [query_resolution(processor, request) for request in requests]
    if all(value is None for value in values):
        return []
    return [{"query_resolution": value} if value else {} for value in values]
