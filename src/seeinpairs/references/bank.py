"""The reference bank: the healthy controls that references are drawn from.

Comparative diagnosis shows the model healthy examples next to the query, so
the bank holds only cases labelled with the task's healthy class, by default
from the training split (references must never come from the evaluation
split the queries are drawn from). Embeddings for retrieval are computed once
per embedder, kept in memory, and optionally cached on disk per image content
hash, so a changed file is re-embedded and a renamed one is not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import faiss
import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..cases import Case
from ..embeddings.images import Embedder, create_embedder, embedder_key, l2_normalise
from ..errors import BankError
from ..imaging import Window, image_hash, load_image
from ..tasks import Task
from .index import INDEX_KINDS, build_index

__all__ = ["ReferenceBank"]


class ReferenceBank(Sequence[Case]):
    """An ordered collection of healthy reference cases with lazy embeddings.

    Embeddings use each case's primary image (``Case.image``). ``cache_dir``
    enables an on-disk cache laid out as ``<cache_dir>/<embedder key>/<sha256>.npy``.
    ``index_kind`` is passed to :func:`~seeinpairs.references.index.build_index`:
    ``"auto"`` (default) is exact (flat) below 50,000 cases and approximate above;
    ``index_options`` (e.g. ``{"nprobe": 64}``) go to it as keyword arguments.
    """

    def __init__(
        self,
        cases: Iterable[Case],
        cache_dir: str | Path | None = None,
        batch_size: int = 32,
        window: Window | str | None = None,
        description: str = "reference bank",
        index_kind: str = "auto",
        index_options: dict | None = None,
    ) -> None:
        self.cases: list[Case] = list(cases)
        seen: set[str] = set()
        for case in self.cases:
            if case.case_id in seen:
                raise BankError(f"{description}: case_id '{case.case_id}' occurs more than once")
            seen.add(case.case_id)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = max(1, int(batch_size))
        self.window = window
        self.description = description
        if index_kind not in INDEX_KINDS:
            raise BankError(f"{description}: unknown index_kind '{index_kind}' (expected one of {', '.join(INDEX_KINDS)})")
        self.index_kind = index_kind
        self.index_options = dict(index_options or {})
        self._embeddings: dict[str, np.ndarray] = {}
        self._indexes: dict[str, faiss.Index] = {}
        self._queries: dict[tuple[str, str], np.ndarray] = {}
        self._embedders: dict[str, Embedder] = {}  # by cache key, for nearest() without embedder=
        self._by_spec: dict[str, Embedder] = {}  # string specs are loaded once (hf models are slow)

    @classmethod
    def from_table(
        cls,
        table: Iterable[Case],
        task: Task,
        split: str | None = "train",
        **kwargs,
    ) -> "ReferenceBank":
        """The cases of ``split`` (all splits when None) labelled ``task.healthy_class``."""
        cases = [c for c in table if c.label == task.healthy_class and (split is None or c.split == split)]
        where = "any split" if split is None else f"split '{split}'"
        if not cases:
            raise BankError(
                f"reference bank is empty: no case in {where} has the healthy label '{task.healthy_class}'"
            )
        kwargs.setdefault("description", f"reference bank ({where}, label '{task.healthy_class}')")
        return cls(cases, **kwargs)

    # Sequence protocol
    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index):  # type: ignore[override]
        return self.cases[index]

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __repr__(self) -> str:
        return f"ReferenceBank({len(self)} cases, {self.description})"

    # -- embeddings ---------------------------------------------------------

    def _resolve(self, embedder: Embedder | str) -> Embedder:
        if isinstance(embedder, str):
            if embedder not in self._by_spec:
                self._by_spec[embedder] = create_embedder(embedder)
            return self._by_spec[embedder]
        return create_embedder(embedder)

    def _key(self, embedder: Embedder) -> str:
        key = embedder_key(embedder)
        if self.window is not None:  # a window changes the pixels, hence the vectors
            key = f"{key}-{self.window if isinstance(self.window, str) else f'{self.window.center:g}_{self.window.width:g}'}"
        return key

    def _cache_folder(self, key: str, embedder: Embedder) -> Path | None:
        if self.cache_dir is None:
            return None
        folder = self.cache_dir / key
        identity = folder / "identity.json"
        if not identity.is_file():
            # Human-readable record of what the hashed folder name stands for.
            atomic_write_text(identity, json.dumps(embedder.identity(), sort_keys=True, default=str, indent=1))
        return folder

    def _embed_paths(self, paths: Sequence[str], embedder: Embedder, key: str) -> np.ndarray:
        """Embed image files, reading and filling the on-disk cache where configured."""
        folder = self._cache_folder(key, embedder)
        vectors: list[np.ndarray | None] = [None] * len(paths)
        hashes = [image_hash(p) for p in paths] if folder is not None else [None] * len(paths)
        if folder is not None:
            for i, digest in enumerate(hashes):
                cached = folder / f"{digest}.npy"
                if cached.is_file():
                    try:
                        vector = np.load(cached, allow_pickle=False)
                    except (OSError, ValueError):
                        continue  # a truncated cache file: recompute it
                    if vector.shape == (embedder.dim,):
                        vectors[i] = vector.astype(np.float32)
        missing = [i for i, v in enumerate(vectors) if v is None]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            images = [load_image(paths[i], window=self.window) for i in chunk]
            for i, vector in zip(chunk, embedder.embed(images)):
                vectors[i] = vector
                if folder is not None:
                    _atomic_save(folder / f"{hashes[i]}.npy", vector)
        if not paths:
            return np.zeros((0, embedder.dim), dtype=np.float32)
        return l2_normalise(np.stack(vectors))  # type: ignore[arg-type]

    def embeddings(self, embedder: Embedder | str) -> np.ndarray:
        """The bank's ``(len(bank), dim)`` float32 embeddings, computed once per embedder."""
        embedder = self._resolve(embedder)
        key = self._key(embedder)
        if key not in self._embeddings:
            array = self._embed_paths([c.image for c in self.cases], embedder, key)
            array.setflags(write=False)
            self._embeddings[key] = array
            self._embedders[key] = embedder
        return self._embeddings[key]

    def embed_query(self, case: Case, embedder: Embedder | str) -> np.ndarray:
        """The ``(dim,)`` embedding of a query's primary image, memoised by content hash."""
        embedder = self._resolve(embedder)
        key = self._key(embedder)
        memo = (key, image_hash(case.image))
        if memo not in self._queries:
            vector = self._embed_paths([case.image], embedder, key)[0]
            vector.setflags(write=False)
            self._queries[memo] = vector
        return self._queries[memo]

    def index(self, embedder: Embedder | str) -> faiss.Index:
        """An inner-product (cosine) faiss index over the bank, built once per embedder.

        Exact (flat) for small banks; see ``index_kind``.
        """
        embedder = self._resolve(embedder)
        key = self._key(embedder)
        if key not in self._indexes:
            vectors = self.embeddings(embedder)
            if len(vectors):
                index = build_index(vectors, self.index_kind, **self.index_options)
            else:
                index = faiss.IndexFlatIP(embedder.dim)
            self._indexes[key] = index
        return self._indexes[key]

    def nearest(self, vector: np.ndarray, n: int, embedder: Embedder | str | None = None) -> list[tuple[int, float]]:
        """The ``n`` bank positions most similar to ``vector`` as ``(index, cosine)``, best first.

        Ties are ordered by bank position so results are reproducible. Without
        ``embedder`` the bank's only embedded space is used.
        """
        if embedder is None:
            if len(self._embedders) != 1:
                state = "none has" if not self._embedders else f"{len(self._embedders)} have"
                raise BankError(f"bank.nearest needs embedder= ({state} been computed for this bank)")
            embedder = next(iter(self._embedders.values()))
        index = self.index(embedder)
        query = l2_normalise(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if query.shape[1] != index.d:
            raise BankError(f"query vector has {query.shape[1]} dimensions but the bank index has {index.d}")
        n = min(int(n), index.ntotal)
        if n <= 0:
            return []
        scores, ids = index.search(query, n)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        return sorted(found, key=lambda item: (-item[1], item[0]))


def _atomic_save(path: Path, vector: np.ndarray) -> None:
    """Write via a temporary file so parallel runs never read a half-written array."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(vector, dtype=np.float32))
