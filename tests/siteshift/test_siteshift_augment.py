import numpy as np
import pytest
from PIL import Image
from siteshift_data import write_images

from seeinpairs.errors import ConfigError
from seeinpairs.references.bank import ReferenceBank
from seeinpairs.siteshift import AcquisitionAugment, AcquisitionTransform, augment_rng
from seeinpairs.tasks import Task
from seeinpairs.training.config import TrainConfig
from seeinpairs.training.data import ExampleBuilder

TASK = Task(name="t", question="Is it abnormal?", classes=["normal", "abnormal"], healthy_class="normal")


def images(n: int, colour: bool = True) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    shape = (16, 18, 3) if colour else (16, 18)
    return [Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).convert("RGB") for _ in range(n)]


def test_shared_draw_gives_every_image_the_same_transform():
    augment = AcquisitionAugment(shared=True)
    for seed in range(5):
        transforms = augment.transforms(np.random.default_rng(seed), 4)
        assert len(set(transforms)) == 1 and transforms[0] is not None


def test_independent_draws_differ_per_image_and_keep_the_query_first():
    shared, independent = AcquisitionAugment(shared=True), AcquisitionAugment(shared=False)
    transforms = independent.transforms(np.random.default_rng(0), 4)
    assert len(set(transforms)) == 4
    # the query (last image) gets the stream's first draw in both modes and for any k
    assert transforms[-1] == shared.transforms(np.random.default_rng(0), 4)[-1]
    assert transforms[-1] == independent.transforms(np.random.default_rng(0), 1)[-1]


def test_shared_transform_is_applied_identically_to_identical_images():
    """With noise off, a shared draw maps equal images to equal images; independent draws do not."""
    same = images(1) * 3
    quiet = {"noise": (0.0, 0.0)}
    out = AcquisitionAugment(shared=True, **quiet).apply(same, np.random.default_rng(1))
    arrays = [np.asarray(i) for i in out]
    assert all(np.array_equal(arrays[0], a) for a in arrays[1:])
    assert not np.array_equal(arrays[0], np.asarray(same[0]))
    out = AcquisitionAugment(shared=False, **quiet).apply(same, np.random.default_rng(1))
    assert not np.array_equal(np.asarray(out[0]), np.asarray(out[1]))


def test_apply_does_not_modify_inputs_and_probability_zero_is_a_no_op():
    originals = images(3)
    copies = [np.asarray(i).copy() for i in originals]
    AcquisitionAugment().apply(originals, np.random.default_rng(0))
    assert all(np.array_equal(np.asarray(i), c) for i, c in zip(originals, copies))
    out = AcquisitionAugment(probability=0.0).apply(originals, np.random.default_rng(0))
    assert all(a is b for a, b in zip(out, originals))


def test_sampled_values_stay_in_their_ranges():
    augment = AcquisitionAugment(gain=(0.9, 1.1), gamma=(0.8, 1.25), blur=(0.0, 0.01), noise=(0.01, 0.02))
    rng = np.random.default_rng(0)
    for _ in range(200):
        t = augment.sample(rng)
        assert 0.9 <= t.gain <= 1.1 and 0.8 <= t.gamma <= 1.25 and 0 <= t.blur <= 0.01 and 0.01 <= t.noise <= 0.02
        assert all(0.88 <= c <= 1.12 for c in t.color)


def test_augmentation_stream_depends_on_seed_epoch_and_case_only():
    draw = lambda *key: AcquisitionAugment().sample(augment_rng(*key))
    assert draw(0, 1, "case") == draw(0, 1, "case")
    assert draw(0, 1, "case") != draw(0, 2, "case") and draw(0, 1, "case") != draw(1, 1, "case")
    assert draw(0, 1, "case") != draw(0, 1, "other")


@pytest.mark.parametrize("value, field", [
    ({"kind": "mixup"}, "augment.kind"),
    ({"gain": [1.2, 0.8]}, "augment"),
    ({"gamma": [0, 1]}, "augment"),
    ({"noise": [-0.1, 0.1]}, "augment"),
    ({"probability": 2}, "augment.probability"),
    ({"sharde": True}, "augment.sharde"),
])
def test_bad_augment_config_names_the_field(value, field):
    data = {"task": TASK.model_dump(), "data": {"manifest": "m.csv"}, "model": {"tiny": "qwen2_vl"},
            "augment": value}
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(data)
    assert f"field '{field}" in str(info.value) and "\n" not in str(info.value)


# ----- wired into training examples ----------------------------------------------------------------------
@pytest.fixture
def builders(tmp_path):
    table = write_images(tmp_path, n_patients=12, per_patient=2, colour=True)
    bank = ReferenceBank.from_table(table, TASK, split=None)
    cases = [c for c in table if c.split == "train"]

    def make(augment, ks=(2,), seed=0):
        return ExampleBuilder(TASK, None, bank, "random", list(ks), seed=seed, augment=augment)

    return make, cases


def test_training_requests_are_augmented_deterministically(builders):
    make, cases = builders
    plain, shared = make(None), make(AcquisitionAugment(shared=True))
    again = make(AcquisitionAugment(shared=True))
    for case in cases:
        a, b = plain.train_request(case, 0), shared.train_request(case, 0)
        assert a.image_ids == b.image_ids  # augmentation leaves the references alone
        assert all(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))
        c = again.train_request(case, 0)
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(b.images, c.images))
        d = shared.train_request(case, 1)
        assert not np.array_equal(np.asarray(b.images[-1]), np.asarray(d.images[-1]))  # a new draw per epoch
        # validation requests are never augmented
        assert all(np.array_equal(np.asarray(x), np.asarray(y))
                   for x, y in zip(plain.eval_request(case, 2).images, shared.eval_request(case, 2).images))


def test_shared_training_examples_use_one_transform_for_query_and_references(builders, monkeypatch):
    make, cases = builders
    seen: list[list[AcquisitionTransform]] = []
    original = AcquisitionTransform.apply

    def spy(self, image, rng=None, source="image"):
        seen[-1].append(self)
        return original(self, image, rng, source)

    monkeypatch.setattr(AcquisitionTransform, "apply", spy)
    for shared in (True, False):
        builder = make(AcquisitionAugment(shared=shared))
        for case in cases[:4]:
            seen.append([])
            builder.train_request(case, 0)
            assert len(seen[-1]) == 3
            assert (len(set(seen[-1])) == 1) == shared


def test_spanning_covers_the_training_sites_and_not_the_held_out_one():
    from seeinpairs.siteshift import create_protocol

    protocol = create_protocol("default4")
    training = [t for name, t in protocol.sites.items() if name != protocol.held_out]
    augment = AcquisitionAugment.spanning(training, shared=False)
    assert augment.shared is False
    assert augment.gain == (0.92, 1.1) and augment.noise == (0.0, 0.03) and augment.color == (0.96, 1.05)
    held = protocol.sites[protocol.held_out]
    assert not augment.noise[0] <= held.noise <= augment.noise[1]  # the held-out site is an extrapolation
    with pytest.raises(ConfigError, match="no transforms"):
        AcquisitionAugment.spanning([])
