"""Prompt embeddings and topics, without a model download.

No sentence-embedding model that ships inside a package could be installed offline here, so the embedding is a
deterministic *feature-hashing* vector, not a learned one: each lower-cased word and each character 3-gram of a word
(with boundary marks) is hashed (BLAKE2b) to one of DIMENSIONS buckets with a sign, the counts are L2-normalised and
rounded to 3 decimals. Prompts that share words and word pieces are close; synonyms are not. It holds no text, but
it is not one-way against a guess: whoever reads the raw table could test whether a given word was likely in a
prompt. So raw rows never leave the database; only aggregates do, and topics are shown as built-in phrases.

Topics: k-means (k-means++ start, fixed seed, bounded iterations) over the embeddings; each cluster is shown only as
the built-in example phrases nearest its centroid (EXAMPLE_PHRASES), never as anything a user wrote.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

DIMENSIONS = 256
WORD = re.compile(r"[^\W_]+", re.UNICODE)

# The only text topics are ever shown as: fixed here, not learned from users.
EXAMPLE_PHRASES: tuple[str, ...] = (
    "portrait of a person", "close-up face photo", "landscape with mountains and a lake", "city street at night",
    "futuristic science fiction city", "fantasy castle and dragons", "cute cartoon animal", "cat", "dog",
    "anime character illustration", "oil painting in a classical style", "watercolour painting", "pixel art game",
    "product photo on a white background", "logo design", "interior design of a room", "food photography",
    "flowers and plants", "ocean and beach", "space, planets and stars", "abstract shapes and colours",
    "car or vehicle", "architecture and buildings", "forest in autumn", "snowy winter scene", "robot or machine",
    "medieval knight in armour", "underwater scene with fish", "sunset sky", "black and white photograph",
)


def _features(text: str) -> list[str]:
    words = WORD.findall(text.lower())
    grams = [f"w:{w}" for w in words]
    for w in words:
        padded = f"<{w}>"
        grams += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
    return grams


def embed(text: str) -> list[float]:
    """The prompt's hashed feature vector (DIMENSIONS floats, unit length; all zeros for a prompt without words)."""
    vector = np.zeros(DIMENSIONS)
    for feature in _features(text):
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        vector[value % DIMENSIONS] += 1.0 if (value >> 63) & 1 else -1.0
    norm = float(np.linalg.norm(vector))
    if norm > 0:
        vector /= norm
    return [round(float(x), 3) for x in vector]


def kmeans(points: np.ndarray, k: int, *, iterations: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (k-means++ start): (centroids, label per point). k is capped at the number of points."""
    rng = np.random.default_rng(seed)
    count = len(points)
    k = max(1, min(k, count))
    centroids = [points[rng.integers(count)]]
    for _ in range(1, k):
        distances = np.min([((points - c) ** 2).sum(axis=1) for c in centroids], axis=0)
        total = distances.sum()
        index = int(rng.choice(count, p=distances / total)) if total > 0 else int(rng.integers(count))
        centroids.append(points[index])
    centres = np.array(centroids)
    labels = np.zeros(count, dtype=int)
    for _ in range(iterations):
        labels = np.argmin(((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
        moved = np.array([points[labels == j].mean(axis=0) if np.any(labels == j) else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres, labels


@lru_cache(maxsize=1)
def _phrase_vectors() -> np.ndarray:
    return np.array([embed(p) for p in EXAMPLE_PHRASES])


def nearest_phrases(centroid: np.ndarray, count: int = 2) -> list[str]:
    """The built-in example phrases closest (cosine) to a centroid."""
    norm = float(np.linalg.norm(centroid)) or 1.0
    scores = _phrase_vectors() @ (centroid / norm)
    return [EXAMPLE_PHRASES[i] for i in np.argsort(-scores, kind="stable")[:count]]
