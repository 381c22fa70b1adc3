"""Splitting a message into one turn per image (for templates that render images before text)."""

from seeinpairs.backends.chat_layout import one_image_per_turn


def text(t):
    return {"type": "text", "text": t}


IMAGE = {"type": "image"}


def test_each_image_starts_a_turn_holding_the_text_up_to_the_next_image():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [text("Compare."), text("Reference 1:"), IMAGE, text("Query:"), IMAGE,
                                             text("Normal?")]}]
    turns = one_image_per_turn(messages)
    assert turns[0] == messages[0]
    assert [t["role"] for t in turns[1:]] == ["user"] * 3
    assert [t["content"] for t in turns[1:]] == [[text("Compare."), text("Reference 1:")], [IMAGE, text("Query:")],
                                                 [IMAGE, text("Normal?")]]


def test_a_message_that_starts_with_an_image_or_has_none_keeps_its_first_turn_whole():
    assert one_image_per_turn([{"role": "user", "content": [IMAGE, text("What is it?")]}]) == \
        [{"role": "user", "content": [IMAGE, text("What is it?")]}]
    plain = [{"role": "user", "content": [text("only text")]}]
    assert one_image_per_turn(plain) == plain
