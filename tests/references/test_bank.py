"""ReferenceBank: construction from a table, embeddings, caches and nearest-neighbour search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seeinpairs.cases import Case, CaseTable
from seeinpairs.embeddings.images import PixelEmbedder
from seeinpairs.errors import BankError
from seeinpairs.references import ReferenceBank
from seeinpairs.tasks import Task

TASK = Task(question="Is there pneumonia?", classes=["normal", "pneumonia"], healthy_class="normal")


class CountingEmbedder(PixelEmbedder):
    """A pixel embedder that counts the images it embeds, to observe caching."""

    def __init__(self) -> None:
        super().__init__(size=8, bins=8)
        self.calls = 0

    def embed(self, images):
        self.calls += len(list(images))
        return super().embed(images)


def _png(path: Path, seed: int) -> str:
    array = np.random.default_rng(seed).integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture()
def table(tmp_path) -> CaseTable:
    specs = [
        ("n1", "normal", "train"), ("n2", "normal", "train"), ("n3", "normal", "val"),
        ("x1", "pneumonia", "train"), ("n4", "normal", "test"), ("n5", "normal", "train"),
    ]
    return CaseTable(
        Case(cid, (_png(tmp_path / f"{cid}.png", i),), label, f"p{i}", split=split)
        for i, (cid, label, split) in enumerate(specs)
    )


def test_from_table_keeps_healthy_cases_of_the_split(table):
    bank = ReferenceBank.from_table(table, TASK)
    assert [c.case_id for c in bank] == ["n1", "n2", "n5"]
    assert len(bank) == 3 and bank[0].case_id == "n1"
    assert [c.case_id for c in ReferenceBank.from_table(table, TASK, split="val")] == ["n3"]
    assert [c.case_id for c in ReferenceBank.from_table(table, TASK, split=None)] == ["n1", "n2", "n3", "n4", "n5"]


def test_empty_bank_names_split_and_healthy_class(table):
    with pytest.raises(BankError) as info:
        ReferenceBank.from_table(table, TASK, split="holdout")
    message = str(info.value)
    assert "'holdout'" in message and "'normal'" in message and "\n" not in message
    only_sick = CaseTable([c for c in table if c.label != "normal"])
    with pytest.raises(BankError, match="any split"):
        ReferenceBank.from_table(only_sick, TASK, split=None)


def test_duplicate_case_ids_are_rejected(table):
    with pytest.raises(BankError, match="'n1' occurs more than once"):
        ReferenceBank([table[0], table[0]])


def test_embeddings_are_normalised_and_memoised(table):
    bank = ReferenceBank.from_table(table, TASK)
    embedder = CountingEmbedder()
    vectors = bank.embeddings(embedder)
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert bank.embeddings(embedder) is vectors and embedder.calls == 3
    assert not vectors.flags.writeable
    # a string spec is resolved once and keyed by identity
    assert bank.embeddings("pixel") is bank.embeddings("pixel")


def test_disk_cache_is_reused_and_keyed_by_content(table, tmp_path):
    cache = tmp_path / "cache"
    first = CountingEmbedder()
    expected = ReferenceBank.from_table(table, TASK, cache_dir=cache).embeddings(first)
    assert first.calls == 3
    folders = [p for p in cache.iterdir() if p.is_dir()]
    assert len(folders) == 1 and len(list(folders[0].glob("*.npy"))) == 3
    assert (folders[0] / "identity.json").is_file()

    second = CountingEmbedder()
    again = ReferenceBank.from_table(table, TASK, cache_dir=cache).embeddings(second)
    assert second.calls == 0
    np.testing.assert_allclose(again, expected)

    # rewriting one image changes its hash, so only that image is embedded again
    _png(Path(table.get("n2").image), seed=99)
    third = CountingEmbedder()
    ReferenceBank.from_table(table, TASK, cache_dir=cache).embeddings(third)
    assert third.calls == 1

    # another embedder configuration gets its own folder
    ReferenceBank.from_table(table, TASK, cache_dir=cache).embeddings(PixelEmbedder(size=4, bins=4))
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_nearest_returns_sorted_scores(table):
    bank = ReferenceBank.from_table(table, TASK)
    with pytest.raises(BankError, match="needs embedder="):
        bank.nearest(np.ones(8), 1)
    vectors = bank.embeddings("pixel")
    hits = bank.nearest(vectors[1], 10)  # the only embedded space is used; n is clipped
    assert len(hits) == 3 and hits[0][0] == 1 and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert bank.nearest(vectors[2], 2, embedder="pixel")[0][0] == 2
    assert bank.nearest(vectors[0], 0, embedder="pixel") == []
    with pytest.raises(BankError, match="dimensions"):
        bank.nearest(np.ones(3), 1, embedder="pixel")
    assert bank.index("pixel").ntotal == 3


def test_embed_query_is_memoised_by_content(table, tmp_path):
    bank = ReferenceBank.from_table(table, TASK)
    embedder = CountingEmbedder()
    query = table.get("x1")
    copy_path = tmp_path / "copy.png"
    copy_path.write_bytes(Path(query.image).read_bytes())
    vector = bank.embed_query(query, embedder)
    same = bank.embed_query(Case("other", (str(copy_path),)), embedder)
    assert embedder.calls == 1 and vector.shape == (embedder.dim,)
    np.testing.assert_array_equal(vector, same)
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-5)
