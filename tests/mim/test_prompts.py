from seeinpairs.mim.format import MimDataset
from seeinpairs.mim.prompts import ablation_position, build_request, interleaved_content


def test_images_go_where_the_placeholders_are():
    content = interleaved_content("Before <image> and after <image>: which?", 2)
    assert [p["type"] for p in content] == ["text", "image", "text", "image", "text"]
    assert content[0]["text"] == "Before " and content[-1]["text"] == ": which?"
    leading = interleaved_content("<image><image><image>Q?", 3)
    assert [p["type"] for p in leading] == ["image", "image", "image", "text"]
    dropped = interleaved_content("<image>a<image>b<image>c", 3, keep=[1])
    assert [p["type"] for p in dropped] == ["text", "image", "text"] and dropped[0]["text"] == "a"


def test_requests_keep_item_order_and_options(mim_files, tiny_models):
    from seeinpairs.backends.encoding import chat_prompt
    from seeinpairs.backends.processors import load_processor

    files, roots = mim_files
    dataset = MimDataset.load(files["coreference"], roots)
    item = dataset.items[0]
    images = dataset.images(item)
    request = build_request(item, images)
    assert request.n_images == 3 and request.image_ids == list(item.images)
    assert request.options == ["A: the first image", "B: the second image", "C: the third image"]
    single = build_request(item, images, [ablation_position(item, "last")])
    assert single.n_images == 1 and single.image_ids == [item.images[2]] and single.options == request.options
    processor = load_processor(tiny_models["qwen2_vl"])
    prompt = chat_prompt(processor, request)
    assert prompt.count("<|vision_start|>") == 3 and prompt.index("<|vision_start|>") < prompt.index("Which image")
    assert chat_prompt(processor, single).count("<|vision_start|>") == 1
    assert ablation_position(item, "first") == 0 and ablation_position(item, 7) == 2
