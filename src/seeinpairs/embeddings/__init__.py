"""Embeddings for retrieval and matching: image embedders (reference retrieval) and text embedders
(set-difference ranking and judging, open-ended answer similarity)."""
