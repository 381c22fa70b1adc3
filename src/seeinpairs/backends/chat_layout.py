"""Chat messages laid out so each label stands right before its own image, whatever the chat template.

Prompts name each image by the text in front of it ("Reference 1:", "Query:").
Most chat templates render a message's parts in order, so the label, then its
image, reach the model as written. Some hub templates (LLaVA 1.5 and
LLaVA-OneVision as llava-hf ships them) render all of a message's images first
and then all of its text: the labels would all follow the images and name none
of them. For such a template each image starts a new user turn that holds the
image and the text up to the next image; the label in front of an image then
ends the previous turn, and a turn's images-first rendering puts that image
right after it. Templates that keep the order get the messages unchanged, so
their prompts (and cached prefixes) stay exactly as they were.

The template's behaviour is read from the template itself (a probe message
rendered with and without an image between two texts), not from a family list,
so a checkpoint whose template behaves either way is laid out correctly.
"""

from __future__ import annotations

_BEFORE, _AFTER = "LABELBEFOREIMAGE", "TEXTAFTERIMAGE"


def _between(processor, content: list[dict]) -> str | None:
    """The rendered text between the two probe texts of a one-message chat, or None when they are out of order."""
    rendered = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=False)
    start, end = rendered.find(_BEFORE), rendered.find(_AFTER)
    if start < 0 or end < start:
        return None
    return rendered[start + len(_BEFORE):end]


#: (processor class, chat template) -> whether the template keeps image parts in place
_KEEPS_ORDER: dict[tuple[type, str], bool] = {}


def template_keeps_image_order(processor) -> bool:
    """True when the chat template renders an image part where it stands among the text parts.

    Found by rendering ``[text, image, text]`` and ``[text, text]``: a template that moves images out
    of place renders the same text between the two texts in both. Remembered per template."""
    key = (type(processor), str(getattr(processor, "chat_template", None)))
    if key not in _KEEPS_ORDER:
        text = [{"type": "text", "text": _BEFORE}, {"type": "text", "text": _AFTER}]
        with_image = _between(processor, [text[0], {"type": "image"}, text[1]])
        _KEEPS_ORDER[key] = with_image is not None and with_image != _between(processor, text)
    return _KEEPS_ORDER[key]


def one_image_per_turn(messages: list[dict]) -> list[dict]:
    """Messages split so that every image part starts a new turn of the same role.

    ``[text a, image 1, text b, image 2, text c]`` becomes the turns ``[a]``, ``[image 1, b]``,
    ``[image 2, c]``: under an images-first template, ``a`` (ending with image 1's label) precedes
    image 1, and ``b`` (ending with image 2's label) precedes image 2. Text-only content is unchanged."""
    out: list[dict] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or not any(part.get("type") == "image" for part in content):
            out.append(message)
            continue
        turns: list[list[dict]] = [[]]
        for part in content:
            if part.get("type") == "image" and turns[-1]:
                turns.append([])
            turns[-1].append(part)
        out.extend({**message, "content": turn} for turn in turns if turn)
    return out


def labelled_messages(processor, messages: list[dict]) -> list[dict]:
    """``messages`` as they must be rendered by ``processor``'s chat template to keep labels next to images."""
    if template_keeps_image_order(processor):
        return messages
    return one_image_per_turn(messages)
