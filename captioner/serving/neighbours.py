"""The nearest-neighbour consensus (Devlin et al. 2015, "Exploring nearest neighbor approaches for image
captioning"): a caption that says what people said about similar photos is usually right.

``NeighbourIndex`` holds the training photos as coordinates in the domain check's principal subspace
(``domain.py``) and their reference captions as hashed n-gram counts (``HashedReferences``), not as
text; ``consensus`` is the CIDEr-D (``cider.py``) of a caption against the references of the ``k``
nearest photos, exactly the score the plain text would give. Stored as JSON (``neighbours*.json``,
arrays packed by ``jsonfiles.pack_array``), written by ``pipeline/calibrate.py``.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .assessment import ConfidenceError
from .cider import NGRAM_ORDERS, CiderD, ngram_counts
from .domain import unit_rows
from .jsonfiles import pack_array, read_json, smallest_uint, unpack_array

NEIGHBOURS_FORMAT = "captioner-neighbours"
NEIGHBOURS_VERSION = 2  # 2: references as hashed n-gram counts (version 1 held the caption text)
REBUILD_NEIGHBOURS = "python -m captioner calibrate --all --refit-neighbours"
HASH_BYTES = 8  # n-gram keys: BLAKE2b with an 8-byte digest
LOCAL_BITS = 32  # n-grams of a single photo are stored by the low 32 bits of that key (see HashedReferences)


def gram_hash(words: Sequence[str]) -> int:
    """The stored key of an n-gram: BLAKE2b (8-byte digest) of its words joined by single spaces, UTF-8,
    read as a little-endian unsigned 64-bit integer. Stable across runs, machines and Python versions."""
    digest = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=HASH_BYTES).digest()
    return int.from_bytes(digest, "little")


def _by_order(orders: np.ndarray) -> np.ndarray:
    """The permutation that lists entries order by order (a stable sort by order, in linear time)."""
    return np.concatenate([np.flatnonzero(orders == n) for n in range(NGRAM_ORDERS)])


_ARRAYS = ("shared_keys", "shared_df", "local_keys", "references_per_photo", "grams_per_reference", "entries", "counts")


@dataclass
class HashedReferences:
    """Each training photo's reference captions as n-gram counts, with no caption text: every n-gram is
    replaced by its ``gram_hash`` key, enough for exact CIDEr-D against a caption hashed the same way.

    * ``shared_keys`` (S,) / ``shared_df`` (S,): the n-grams found in the references of two or more photos,
      by key, with their document frequency (how many photos' references hold them); order by order
      (``shared_per_order``: how many of each), most frequent first;
    * ``local_keys`` (L,): the n-grams of one photo only (document frequency 1), by the low ``local_bits``
      bits of their key, in order of first appearance. A caption's n-gram is only ever compared with them
      (it is one of them or it is in no reference: both have the same CIDEr-D weight, so no frequency is
      stored). The few whose low bits clash with another's are listed as shared instead, so no two stored
      n-grams look alike;
    * ``references_per_photo`` (N,) and ``grams_per_reference`` (R, 4): the distinct n-grams of each order;
    * ``entries`` (E,) and ``counts`` (E,): each reference's n-grams and their counts, order by order in
      first-occurrence order (the float arithmetic is then the same as for the text). For an n-gram of
      order n: 0 = the next local n-gram, 1..S_n = the shared n-gram of order n at that rank, S_n + 1 + j =
      the photo's j-th local n-gram again (it is in several of the photo's references). The file lists all
      the entries of order 1, then of order 2, … (they compress better so).

    A caption's n-gram is looked up by its full key among the shared n-grams, else by its low bits.
    """

    shared_keys: np.ndarray
    shared_df: np.ndarray
    shared_per_order: list[int]
    local_keys: np.ndarray
    references_per_photo: np.ndarray
    grams_per_reference: np.ndarray
    entries: np.ndarray  # in reference order (the file holds them order by order)
    counts: np.ndarray
    local_bits: int = LOCAL_BITS
    stats: dict = field(default_factory=dict)  # n-gram and collision counts from the build
    _entry_keys: np.ndarray | None = field(default=None, repr=False)  # (E,) shared index, or S + local index
    _keys: list | None = field(default=None, repr=False)
    _cider: CiderD | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Checks that the arrays agree, and resolves every entry to its n-gram."""
        s, gpr = len(self.shared_keys), self.grams_per_reference
        self.shared_per_order = [int(x) for x in self.shared_per_order]
        if len(self.shared_df) != s or len(self.shared_per_order) != NGRAM_ORDERS or sum(self.shared_per_order) != s:
            raise ValueError(f"{s} shared keys, {len(self.shared_df)} frequencies, {self.shared_per_order} by order")
        if gpr.ndim != 2 or gpr.shape[1] != NGRAM_ORDERS or int(self.references_per_photo.sum()) != len(gpr):
            raise ValueError(f"{int(self.references_per_photo.sum())} references by photo but n-gram counts of shape "
                             f"{gpr.shape} (expected (R, {NGRAM_ORDERS}))")
        self.reference_start = np.r_[0, np.cumsum(self.references_per_photo, dtype=np.int64)]
        self.entry_start = np.r_[0, np.cumsum(gpr.sum(axis=1), dtype=np.int64)]
        codes = self.entries.astype(np.int64)
        if len(codes) != self.entry_start[-1] or len(self.counts) != len(codes) or (self.counts < 1).any():
            raise ValueError(f"{len(codes)} entries and {len(self.counts)} counts (all >= 1) expected "
                             f"{self.entry_start[-1]}")
        order = self.entry_orders()
        per_order = np.asarray(self.shared_per_order, np.int64)[order]
        first_shared = np.r_[0, np.cumsum(self.shared_per_order)][order]
        new, again = codes == 0, codes > per_order
        if int(new.sum()) != len(self.local_keys):
            raise ValueError(f"{int(new.sum())} local n-grams referenced but {len(self.local_keys)} stored")
        introduced = np.r_[0, np.cumsum(new)]  # local n-grams introduced before each entry (and in all)
        photo_of_entry = np.repeat(np.arange(self.photos), np.diff(self.entry_start[self.reference_start]))
        first_local = introduced[self.entry_start[self.reference_start[:-1]]]  # each photo's first local n-gram
        local = np.where(new, introduced[:-1], 0)
        local[again] = first_local[photo_of_entry[again]] + (codes - per_order - 1)[again]
        if (local[again] >= introduced[:-1][again]).any():
            raise ValueError("an entry repeats a local n-gram its photo has not introduced")
        self._entry_keys = np.where(new | again, s + local, first_shared + codes - 1)

    @property
    def photos(self) -> int:
        """How many training photos the references belong to."""
        return len(self.references_per_photo)

    def entry_orders(self) -> np.ndarray:
        """(E,) each entry's n-gram order minus one."""
        gpr = self.grams_per_reference.astype(np.int64)
        return np.repeat(np.tile(np.arange(NGRAM_ORDERS, dtype=np.int8), len(gpr)), gpr.reshape(-1))

    # ---------------------------------------------------------------------------------------- build

    @classmethod
    def from_captions(cls, references: Sequence[Sequence[str]], local_bits: int = LOCAL_BITS) -> "HashedReferences":
        """Hash each photo's reference captions (cleaned text, words separated by spaces)."""
        counted = [[ngram_counts(r.split()) for r in refs] for refs in references]
        df: Counter = Counter()
        for photo in counted:
            df.update({g for ref in photo for grams in ref for g in grams})
        key = {g: gram_hash(g) for g in df}
        if len(set(key.values())) != len(key):  # about 3e-9 for 340,000 n-grams: never seen
            raise ConfidenceError(f"two of the {len(key)} distinct reference n-grams share a {8 * HASH_BYTES}-bit key")
        mask = (1 << local_bits) - 1
        low_bits = Counter(key[g] & mask for g in df if df[g] == 1)
        shared = sorted((g for g in df if df[g] > 1 or low_bits[key[g] & mask] > 1),
                        key=lambda g: (len(g), -df[g], key[g]))
        per_order = [sum(1 for g in shared if len(g) == n) for n in range(1, NGRAM_ORDERS + 1)]
        rank = {g: i - sum(per_order[:len(g) - 1]) for i, g in enumerate(shared)}  # rank within its order
        local_keys, entries, counts, grams_per_reference = [], [], [], []
        for photo in counted:
            own: dict = {}
            for ref in photo:
                grams_per_reference.append([len(grams) for grams in ref])
                for n, grams in enumerate(ref):
                    for g, tf in grams.items():
                        if g in rank:
                            entries.append(rank[g] + 1)
                        elif g in own:
                            entries.append(per_order[n] + 1 + own[g])
                        else:
                            own[g] = len(own)
                            local_keys.append(key[g] & mask)
                            entries.append(0)
                        counts.append(tf)
        stats = {"distinct_ngrams": len(df), "shared": len(shared), "local": len(local_keys),
                 "full_key_collisions": 0,
                 "local_bits_clashes_listed_as_shared": sum(1 for g in shared if df[g] == 1)}

        def small(values):
            """``values`` as an array of the narrowest unsigned type that holds them."""
            return np.array(values, smallest_uint(int(np.max(values, initial=0))))

        return cls(np.array([key[g] for g in shared], np.uint64), small([df[g] for g in shared]), per_order,
                   np.array(local_keys, smallest_uint(mask)), small([len(p) for p in references]),
                   small(grams_per_reference).reshape(-1, NGRAM_ORDERS), small(entries), small(counts),
                   local_bits, stats)

    # ------------------------------------------------------------------------------------- scoring

    def _key(self, words: Sequence[str]) -> int:
        """A caption n-gram's key: its hash if a shared n-gram has it, else -1 - (its low bits)."""
        h = gram_hash(words)
        return h if h in self._cider.document_frequency else -1 - (h & ((1 << self.local_bits) - 1))

    def cider(self) -> CiderD:
        """The CIDEr-D scorer: document frequencies over the photos, caption n-grams keyed as stored."""
        if self._cider is None:
            df = dict(zip(self.shared_keys.tolist(), self.shared_df.tolist()))
            self._keys = self.shared_keys.tolist() + [-1 - k for k in self.local_keys.tolist()]
            self._cider = CiderD.from_document_frequency(df, self.photos, self._key)
        return self._cider

    def photo_counts(self, photo: int) -> list[list[dict]]:
        """The photo's references as n-gram counts: per reference, one {key: count} per order."""
        self.cider()
        keys, out = self._keys, []
        for r in range(self.reference_start[photo], self.reference_start[photo + 1]):
            at, ref = int(self.entry_start[r]), []
            for size in self.grams_per_reference[r].tolist():
                ref.append(dict(zip([keys[i] for i in self._entry_keys[at:at + size].tolist()],
                                    self.counts[at:at + size].tolist())))
                at += size
            out.append(ref)
        return out

    # ------------------------------------------------------------------------------------- storage

    def to_json(self) -> dict:
        """The stored form: every array packed (``jsonfiles.pack_array``), entries listed order by order."""
        by_order = _by_order(self.entry_orders())
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays["entries"], arrays["counts"] = self.entries[by_order], self.counts[by_order]
        return {"form": f"hashed n-gram counts (n = 1..{NGRAM_ORDERS}) of each reference caption; no caption text",
                "hash": f"blake2b, {HASH_BYTES}-byte digest, of the n-gram's words joined by single spaces (UTF-8), "
                        "read as a little-endian unsigned integer",
                "local_bits": self.local_bits, "shared_per_order": self.shared_per_order, "stats": self.stats,
                "entry_layout": "entries and counts listed order by order (all 1-grams, then 2-grams, ...)",
                **{name: pack_array(array) for name, array in arrays.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "HashedReferences":
        """The inverse of ``to_json``; ValueError (StoredArrayError among them) when the arrays do not agree."""
        arrays = {name: unpack_array(data[name], name) for name in _ARRAYS}
        gpr = arrays["grams_per_reference"]
        if gpr.ndim != 2 or gpr.shape[1] != NGRAM_ORDERS or int(gpr.sum()) != len(arrays["entries"]):
            raise ValueError(f"n-gram counts of shape {gpr.shape} do not match {len(arrays['entries'])} entries")
        by_order = _by_order(np.repeat(np.tile(np.arange(NGRAM_ORDERS, dtype=np.int8), len(gpr)),
                                       gpr.astype(np.int64).reshape(-1)))
        for name in ("entries", "counts"):
            if len(arrays[name]) != len(by_order):
                raise ValueError(f"{len(arrays[name])} {name} for {len(by_order)} n-grams")
            in_reference_order = np.empty_like(arrays[name])
            in_reference_order[by_order] = arrays[name]
            arrays[name] = in_reference_order
        return cls(**arrays, shared_per_order=list(data["shared_per_order"]), local_bits=int(data["local_bits"]),
                   stats=dict(data.get("stats", {})))


@dataclass
class NeighbourIndex:
    """Training photos as coordinates in the domain check's principal subspace, with their references
    as hashed n-gram counts (``HashedReferences``: no caption text)."""

    coords: np.ndarray  # (N, k) unit-length rows
    references: HashedReferences  # the N photos' reference captions, hashed
    k: int = 25  # neighbours whose references a caption is compared with
    info: dict = field(default_factory=dict)
    _prepared: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        """Scales the coordinates to unit length; one reference list per photo."""
        self.coords = unit_rows(np.asarray(self.coords, np.float32))
        if len(self.coords) != self.references.photos:
            raise ConfidenceError(f"{len(self.coords)} coordinates but {self.references.photos} reference lists")

    @classmethod
    def from_captions(cls, coords: np.ndarray, references: Sequence[Sequence[str]], k: int = 25,
                      info: dict | None = None) -> "NeighbourIndex":
        """The index of N photos from their coordinates and cleaned reference captions (hashed here)."""
        return cls(coords, HashedReferences.from_captions(references), k, dict(info or {}))

    def nearest(self, coords: np.ndarray) -> np.ndarray:
        """(B, k) indices of the nearest training photos (cosine similarity), nearest first."""
        sims = unit_rows(np.asarray(coords, np.float32)) @ self.coords.T
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)

    def consensus(self, captions: Sequence[str], coords: np.ndarray) -> np.ndarray:
        """(B,) CIDEr-D of each caption against the pooled references of its picture's neighbours, with
        document frequencies from all the index's references (so a score never depends on the batch)."""
        cider = self.references.cider()
        out = np.zeros(len(captions), np.float64)
        for row, (caption, neighbours) in enumerate(zip(captions, self.nearest(coords))):
            prepared = []
            for j in neighbours.tolist():
                if j not in self._prepared:
                    self._prepared[j] = cider.prepare_counts(self.references.photo_counts(j))
                prepared.extend(self._prepared[j])
            out[row] = cider.score(caption, prepared) if caption.strip() else 0.0
        return out

    def to_json(self) -> dict:
        """The stored form (``neighbours*.json``): float16 coordinates and the hashed references."""
        return {"format": NEIGHBOURS_FORMAT, "version": NEIGHBOURS_VERSION, "k": self.k, "info": self.info,
                "coords": pack_array(self.coords.astype(np.float16)), "references": self.references.to_json()}

    @classmethod
    def from_json(cls, data: dict, source: str = "neighbour index") -> "NeighbourIndex":
        """The index stored in ``data``; ConfidenceError naming ``source`` (and the rebuild command for an
        old version) when it cannot be used."""
        if not isinstance(data, dict) or data.get("format") != NEIGHBOURS_FORMAT:
            raise ConfidenceError(f"{source}: not a captioner neighbour index (format {NEIGHBOURS_FORMAT!r})")
        if data.get("version") != NEIGHBOURS_VERSION:
            old = " (it holds the training captions as text)" if data.get("version") == 1 else ""
            raise ConfidenceError(f"{source}: neighbour index version {data.get('version')!r}{old} is not supported "
                                  f"(expected {NEIGHBOURS_VERSION}: hashed n-gram counts); rebuild it with "
                                  f"`{REBUILD_NEIGHBOURS}` (needs the Flickr8k data; refits nothing else)")
        try:
            return cls(unpack_array(data["coords"], "coords"), HashedReferences.from_json(data["references"]),
                       int(data.get("k", 25)), dict(data.get("info", {})))
        except (KeyError, TypeError, ValueError) as err:  # StoredArrayError is a ValueError
            raise ConfidenceError(f"{source}: unreadable ({err})") from err

    @classmethod
    def load(cls, path: str | Path) -> "NeighbourIndex":
        """The index stored at ``path`` (ConfidenceError when unreadable)."""
        return cls.from_json(read_json(path, "neighbour index", ConfidenceError), str(path))

    def save(self, path: str | Path) -> None:
        """Write the index as JSON."""
        from ..config import save_json

        save_json(self.to_json(), Path(path))
