"""How sure is the caption? A calibrated confidence, a band said in words, and the out-of-domain warning.

For every caption the serving side computes a few **signals** (``Signals``):

* ``score``: the caption's length-normalised log-probability (beam search's ranking score);
* ``consensus``: CIDEr-D of the caption against the reference captions of the 25 training photos whose
  Xception features are nearest to the picture's (``NeighbourIndex``; Devlin et al. 2015, "Exploring
  nearest neighbor approaches for image captioning"): a caption that says what people said about
  similar photos is usually right, one that says something else usually is not. The index holds those
  references as hashed n-gram counts (``HashedReferences``), not as text;
* ``distance`` and ``in_domain``: the out-of-domain check (``domain.py``).

A ``Calibrator`` (logistic regression over the standardised signals, fitted with scikit-learn by
``pipeline/calibrate.py`` on training images held out from training, stored as JSON) maps them to
``confidence``: the chance that the caption is a *good* description, where good is defined against
the references (see ``pipeline/calibrate.py``). Its coefficients are checked to be positive, so the
confidence rises with the score (and the consensus) for fixed other signals. Thresholds on it give the
**band**: "high" (the caption as it is), "medium" ("Probably …"), "low" ("Maybe …"). A picture the
domain check flags is always "low" (its confidence is capped at the low threshold) and its caption is
said after the out-of-domain warning (``sentence.py`` writes the words).

Serving needs numpy only (CIDEr-D is computed here in pure Python, as ``pipeline/scst.CiderD`` does).

    model = ConfidenceModel.load("models/merge-ensemble")
    [a] = model.assess(pooled_features, [caption])      # caption: a Caption (text and score)
    a.to_json()  # {"confidence": 0.71, "band": "high", "in_domain": true, "reason": null}
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .domain import DomainCheck, DomainError, require_format, unit_rows
from .model_folder import CONFIDENCE_FILE, DOMAIN_FILE, NEIGHBOURS_FILE
from .sentence import BANDS

CONFIDENCE_FORMAT = "captioner-confidence"
NEIGHBOURS_FORMAT = "captioner-neighbours"
VERSION = 1  # of the calibration files
NEIGHBOURS_VERSION = 2  # 2: references as hashed n-gram counts (version 1 held the caption text)
REBUILD_NEIGHBOURS = "python -m captioner calibrate --all --refit-neighbours"


class ConfidenceError(ValueError):
    """A calibration or neighbour file that cannot be used; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------ signals

@dataclass
class Signals:
    score: float  # length-normalised log-probability of the caption
    consensus: float  # CIDEr-D against the nearest training photos' references (0 when unknown)
    distance: float = 0.0  # out-of-domain distance
    in_domain: bool = True

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Assessment:
    confidence: float  # in [0, 1]: the chance the caption is a good description
    band: str  # "high" / "medium" / "low"
    in_domain: bool
    reason: str | None = None  # why the picture was flagged (None when in domain)
    signals: Signals | None = None

    def to_json(self) -> dict:
        """The JSON fields of the issue: confidence (a float), band, in_domain, reason."""
        return {"confidence": round(float(self.confidence), 3), "band": self.band, "in_domain": bool(self.in_domain),
                "reason": self.reason}


# ------------------------------------------------------------------------------ neighbour consensus

NGRAM_ORDERS = 4  # CIDEr-D compares 1- to 4-grams
HASH_BYTES = 8  # n-gram keys: BLAKE2b with an 8-byte digest
LOCAL_BITS = 32  # n-grams of a single photo are stored by the low 32 bits of that key (see HashedReferences)


def gram_hash(words: Sequence[str]) -> int:
    """The stored key of an n-gram: BLAKE2b (8-byte digest) of its words joined by single spaces, UTF-8,
    read as a little-endian unsigned 64-bit integer. Stable across runs, machines and Python versions."""
    digest = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=HASH_BYTES).digest()
    return int.from_bytes(digest, "little")


def ngram_counts(words: Sequence[str], key=tuple) -> list[Counter]:
    """Counts of the 1- to 4-grams of ``words``, one Counter per order, each in first-occurrence order;
    ``key`` maps an n-gram's words to its dictionary key (the words as a tuple, or a hash)."""
    return [Counter(key(words[i:i + n]) for i in range(len(words) - n + 1)) for n in range(1, NGRAM_ORDERS + 1)]


class CiderD:
    """Per-caption CIDEr-D exactly as pycocoevalcap computes it (n = 1..4, sigma 6, clipped counts, x10),
    but with document frequencies from a fixed corpus of reference sets, so a caption's score never
    depends on which other captions are scored with it. (The same arithmetic as ``pipeline/scst.CiderD``,
    kept here so serving does not import the training code; ``tests/test_confidence.py`` checks they agree.)

    N-grams are dictionary keys made by ``key`` from their words: the words themselves (a tuple, the
    default) or a hash (``from_document_frequency``, as the neighbour index stores its references)."""

    def __init__(self, corpus_references: Sequence[Sequence[str]], sigma: float = 6.0, key=tuple):
        self.sigma = sigma
        self.key = key
        self.document_frequency: Mapping = Counter()
        for refs in corpus_references:  # one "document" = one image's set of references
            self.document_frequency.update({g for r in refs for grams in self.counts(r) for g in grams})
        self.log_documents = math.log(float(max(len(corpus_references), 1)))

    @classmethod
    def from_document_frequency(cls, document_frequency: Mapping, documents: int, key, sigma: float = 6.0) -> "CiderD":
        """A scorer from stored statistics: ``document_frequency`` maps keys to the number of documents
        (images) whose references hold the n-gram (absent = 0), out of ``documents``."""
        scorer = cls((), sigma, key)
        scorer.document_frequency = document_frequency
        scorer.log_documents = math.log(float(max(documents, 1)))
        return scorer

    def counts(self, text: str) -> list[Counter]:
        return ngram_counts(text.split(), self.key)

    def _vector(self, counts: Sequence[Mapping]):
        vec, norm, length = [defaultdict(float) for _ in range(NGRAM_ORDERS)], [0.0] * NGRAM_ORDERS, 0
        for n, grams in enumerate(counts):
            for gram, tf in grams.items():
                vec[n][gram] = tf * (self.log_documents - math.log(max(1.0, self.document_frequency.get(gram, 0))))
                norm[n] += vec[n][gram] ** 2
                if n == 1:
                    length += tf  # pycocoevalcap measures length in bigrams
        return vec, [math.sqrt(x) for x in norm], length

    def prepare(self, references: Sequence[str]) -> list:
        """Reference vectors of one image, computed once and reused for every candidate."""
        return [self._vector(self.counts(r)) for r in references]

    def prepare_counts(self, references: Sequence[Sequence[Mapping]]) -> list:
        """``prepare`` for references given as n-gram counts (one mapping key -> count per order)."""
        return [self._vector(c) for c in references]

    def score(self, candidate: str, prepared_refs: list) -> float:
        if not prepared_refs:
            return 0.0
        vec, norm, length = self._vector(self.counts(candidate))
        total = 0.0
        for ref_vec, ref_norm, ref_length in prepared_refs:
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for n in range(NGRAM_ORDERS):
                value = sum(min(v, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0) for g, v in vec[n].items())
                if norm[n] and ref_norm[n]:
                    value /= norm[n] * ref_norm[n]
                total += value * penalty / 4
        return 10.0 * total / len(prepared_refs)


def _pack(array: np.ndarray) -> dict:
    """A numeric array as JSON: its little-endian bytes split into byte planes (the high bytes of small
    numbers compress to almost nothing), zlib, base64."""
    array = np.ascontiguousarray(array, dtype=np.dtype(array.dtype).newbyteorder("<"))
    planes = array.reshape(-1).view(np.uint8).reshape(-1, array.dtype.itemsize).T
    return {"dtype": array.dtype.name, "shape": list(array.shape), "encoding": PACKING,
            "data": base64.b64encode(zlib.compress(planes.tobytes(), 9)).decode("ascii")}


def _unpack(data: dict, name: str) -> np.ndarray:
    try:
        dtype = np.dtype(data["dtype"]).newbyteorder("<")
        shape = tuple(int(s) for s in data["shape"])
        if dtype.kind not in "iuf" or data.get("encoding") != PACKING:
            raise ValueError(f"unsupported dtype {data['dtype']!r} or encoding {data.get('encoding')!r}")
        raw = np.frombuffer(zlib.decompress(base64.b64decode(data["data"], validate=True)), np.uint8)
        array = np.ascontiguousarray(raw.reshape(dtype.itemsize, -1).T).view(dtype).reshape(shape)
    except (KeyError, TypeError, ValueError, zlib.error, binascii.Error) as err:
        raise ValueError(f"array {name!r}: {err}") from err
    return array.astype(dtype.newbyteorder("="))


def _smallest_uint(largest: int):
    return next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if largest <= np.iinfo(t).max)


PACKING = "byte-planes+zlib+base64"


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
            return np.array(values, _smallest_uint(int(np.max(values, initial=0))))

        return cls(np.array([key[g] for g in shared], np.uint64), small([df[g] for g in shared]), per_order,
                   np.array(local_keys, _smallest_uint(mask)), small([len(p) for p in references]),
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
        by_order = _by_order(self.entry_orders())
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays["entries"], arrays["counts"] = self.entries[by_order], self.counts[by_order]
        return {"form": f"hashed n-gram counts (n = 1..{NGRAM_ORDERS}) of each reference caption; no caption text",
                "hash": f"blake2b, {HASH_BYTES}-byte digest, of the n-gram's words joined by single spaces (UTF-8), "
                        "read as a little-endian unsigned integer",
                "local_bits": self.local_bits, "shared_per_order": self.shared_per_order, "stats": self.stats,
                "entry_layout": "entries and counts listed order by order (all 1-grams, then 2-grams, ...)",
                **{name: _pack(array) for name, array in arrays.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "HashedReferences":
        arrays = {name: _unpack(data[name], name) for name in _ARRAYS}
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
        return {"format": NEIGHBOURS_FORMAT, "version": NEIGHBOURS_VERSION, "k": self.k, "info": self.info,
                "coords": _pack(self.coords.astype(np.float16)), "references": self.references.to_json()}

    @classmethod
    def from_json(cls, data: dict, source: str = "neighbour index") -> "NeighbourIndex":
        if not isinstance(data, dict) or data.get("format") != NEIGHBOURS_FORMAT:
            raise ConfidenceError(f"{source}: not a captioner neighbour index (format {NEIGHBOURS_FORMAT!r})")
        if data.get("version") != NEIGHBOURS_VERSION:
            old = " (it holds the training captions as text)" if data.get("version") == 1 else ""
            raise ConfidenceError(f"{source}: neighbour index version {data.get('version')!r}{old} is not supported "
                                  f"(expected {NEIGHBOURS_VERSION}: hashed n-gram counts); rebuild it with "
                                  f"`{REBUILD_NEIGHBOURS}` (needs the Flickr8k data; refits nothing else)")
        try:
            return cls(_unpack(data["coords"], "coords"), HashedReferences.from_json(data["references"]),
                       int(data.get("k", 25)), dict(data.get("info", {})))
        except (KeyError, TypeError, ValueError, DomainError) as err:
            raise ConfidenceError(f"{source}: unreadable ({err})") from err

    @classmethod
    def load(cls, path: str | Path) -> "NeighbourIndex":
        return cls.from_json(_read_json(path, "neighbour index"), str(path))

    def save(self, path: str | Path) -> None:
        from ..config import save_json

        save_json(self.to_json(), Path(path))


# --------------------------------------------------------------------------------------- calibrator

TRANSFORMS = {"identity": lambda x: x, "log1p": np.log1p}


@dataclass
class Calibrator:
    """``confidence = sigmoid(intercept + sum_i coef_i * (T_i(signal_i) - center_i) / scale_i)``, then bands.

    ``features`` names Signals fields; ``transforms`` gives each one's T ("identity" or "log1p").
    Every coefficient must be positive: the confidence never falls when a signal rises.
    """

    features: list[str]
    transforms: list[str]
    center: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    high: float  # confidence >= high: band "high"
    low: float  # confidence < low: band "low" (and every out-of-domain picture)
    good: dict = field(default_factory=dict)  # what "good" means (metric, threshold, why)
    info: dict = field(default_factory=dict)  # how it was fitted, held-out figures
    domain_file: str = f"../{DOMAIN_FILE}"  # relative to the model folder
    neighbours_file: str = f"../{NEIGHBOURS_FILE}"

    def __post_init__(self) -> None:
        n = len(self.features)
        if not n or any(len(x) != n for x in (self.transforms, self.center, self.scale, self.coef)):
            raise ConfidenceError("features, transforms, center, scale and coef must have one entry per signal")
        unknown = [f for f in self.features if f not in Signals.__dataclass_fields__ or f == "in_domain"]
        if unknown:
            raise ConfidenceError(f"unknown signals {unknown}")
        if any(t not in TRANSFORMS for t in self.transforms):
            raise ConfidenceError(f"transforms must be among {sorted(TRANSFORMS)}, not {self.transforms}")
        if any(not (c > 0) for c in self.coef) or any(not (s > 0) for s in self.scale):
            raise ConfidenceError(f"every coefficient and scale must be positive (so confidence rises with each "
                                  f"signal), not coef={self.coef}, scale={self.scale}")
        if not 0 <= self.low <= self.high <= 1:
            raise ConfidenceError(f"band thresholds must satisfy 0 <= low <= high <= 1, not {self.low}, {self.high}")

    def matrix(self, signals: Sequence[Signals]) -> np.ndarray:
        """(B, n) raw signal values, in ``features`` order."""
        return np.array([[float(getattr(s, f)) for f in self.features] for s in signals], np.float64).reshape(
            len(signals), len(self.features))

    def confidence_from_matrix(self, values: np.ndarray, in_domain: np.ndarray | None = None) -> np.ndarray:
        """(B,) confidences in [0, 1] from (B, n) raw signal values (and optional (B,) in-domain flags)."""
        values = np.asarray(values, np.float64)
        z = np.empty_like(values)
        for i, t in enumerate(self.transforms):
            x = values[:, i]
            if t == "log1p":
                x = np.maximum(x, 0.0)
            z[:, i] = (TRANSFORMS[t](x) - self.center[i]) / self.scale[i]
        logit = self.intercept + z @ np.asarray(self.coef, np.float64)
        conf = 1.0 / (1.0 + np.exp(-np.clip(np.nan_to_num(logit, nan=-50.0), -50.0, 50.0)))
        if in_domain is not None:
            conf = np.where(np.asarray(in_domain, bool), conf, np.minimum(conf, self.low))
        return conf

    def confidence(self, signals: Signals | Sequence[Signals]) -> float | np.ndarray:
        single = isinstance(signals, Signals)
        batch = [signals] if single else list(signals)
        conf = self.confidence_from_matrix(self.matrix(batch), np.array([s.in_domain for s in batch], bool))
        return float(conf[0]) if single else conf

    def band(self, confidence: float, in_domain: bool = True) -> str:
        if not in_domain or confidence < self.low:
            return "low"
        return "high" if confidence >= self.high else "medium"

    def assess(self, signals: Signals, reason: str | None = None) -> Assessment:
        conf = float(self.confidence(signals))
        return Assessment(conf, self.band(conf, signals.in_domain), signals.in_domain,
                          None if signals.in_domain else reason, signals)

    def to_json(self) -> dict:
        return {"format": CONFIDENCE_FORMAT, "version": VERSION, "model": "logistic regression",
                "features": self.features, "transforms": self.transforms,
                "center": [round(float(x), 6) for x in self.center], "scale": [round(float(x), 6) for x in self.scale],
                "coef": [round(float(x), 6) for x in self.coef], "intercept": round(float(self.intercept), 6),
                "bands": {"high": round(float(self.high), 4), "low": round(float(self.low), 4)},
                "good": self.good, "info": self.info,
                "domain_file": self.domain_file, "neighbours_file": self.neighbours_file}

    @classmethod
    def from_json(cls, data: dict, source: str = "calibrator") -> "Calibrator":
        require_format(data, CONFIDENCE_FORMAT, VERSION, "calibration file", source, ConfidenceError)
        try:
            return cls(list(data["features"]), list(data["transforms"]), [float(x) for x in data["center"]],
                       [float(x) for x in data["scale"]], [float(x) for x in data["coef"]], float(data["intercept"]),
                       float(data["bands"]["high"]), float(data["bands"]["low"]), dict(data.get("good", {})),
                       dict(data.get("info", {})), str(data.get("domain_file", f"../{DOMAIN_FILE}")),
                       str(data.get("neighbours_file", f"../{NEIGHBOURS_FILE}")))
        except ConfidenceError as err:
            raise ConfidenceError(f"{source}: {err}") from err
        except (KeyError, TypeError, ValueError) as err:
            raise ConfidenceError(f"{source}: unreadable ({type(err).__name__}: {err})") from err

    @classmethod
    def load(cls, path: str | Path) -> "Calibrator":
        return cls.from_json(_read_json(path, "calibration"), str(path))

    def save(self, path: str | Path) -> None:
        from ..config import save_json

        save_json(self.to_json(), Path(path))


# ---------------------------------------------------------------------------- one model's assessor

@dataclass
class ConfidenceModel:
    """Everything a model folder needs to assess its captions: calibrator, domain check, neighbours."""

    calibrator: Calibrator
    domain: DomainCheck
    neighbours: NeighbourIndex | None = None  # required when the calibrator uses "consensus"

    def __post_init__(self) -> None:
        if "consensus" in self.calibrator.features and self.neighbours is None:
            raise ConfidenceError("the calibrator uses the neighbour consensus but no neighbour index was given")
        if self.neighbours is not None and self.neighbours.coords.shape[1] != self.domain.components.shape[0]:
            raise ConfidenceError(f"the neighbour index has {self.neighbours.coords.shape[1]}-d coordinates but the "
                                  f"domain check projects to {self.domain.components.shape[0]}")

    @classmethod
    def load(cls, model_dir: str | Path) -> "ConfidenceModel":
        """``model_dir/confidence.json`` plus the domain check and neighbour index it names (relative paths)."""
        model_dir = Path(model_dir)
        path = model_dir / CONFIDENCE_FILE
        if not path.is_file():
            raise ConfidenceError(f"{path}: missing; fit it with `python -m captioner calibrate "
                                  f"--model {model_dir}`")
        calibrator = Calibrator.load(path)
        try:
            domain = DomainCheck.load((model_dir / calibrator.domain_file).resolve())
        except DomainError as err:
            raise ConfidenceError(str(err)) from err
        neighbours = None
        if "consensus" in calibrator.features:
            neighbours = NeighbourIndex.load((model_dir / calibrator.neighbours_file).resolve())
        expected = calibrator.info.get("domain_digest")
        if expected and expected != domain_digest(domain):
            raise ConfidenceError(f"{path}: fitted with a different {DOMAIN_FILE} (digest {expected[:12]}…); "
                                  "refit the calibration")
        return cls(calibrator, domain, neighbours)

    def signals(self, features: np.ndarray, captions: Sequence) -> list[Signals]:
        """Signals for B pictures: ``features`` (B, 2048) pooled or (B, g, g, 2048) grids, and each
        picture's chosen caption (a ``Caption``, or any object with ``text`` and ``score``; its ``tokens``
        when it has them, since the references are stored in the model's tokenisation)."""
        distances = self.domain.distance(features)
        texts = [getattr(c, "tokens", None) or c.text for c in captions]
        if self.neighbours is not None:
            consensus = self.neighbours.consensus(texts, self.domain.project(features))
        else:
            consensus = np.zeros(len(texts))
        return [Signals(float(c.score), float(k), float(d), bool(d <= self.domain.threshold))
                for c, k, d in zip(captions, consensus, distances)]

    def assess(self, features: np.ndarray, captions: Sequence) -> list[Assessment]:
        """One Assessment (confidence, band, in_domain, reason) per picture."""
        out = []
        for s in self.signals(features, captions):
            reason = None if s.in_domain else self.domain.verdict(s.distance).reason
            out.append(self.calibrator.assess(s, reason))
        return out


def domain_digest(domain: DomainCheck) -> str:
    """Identifies a domain check's subspace (the neighbour coordinates and calibration depend on it)."""
    import hashlib

    data = domain.to_json()
    return hashlib.sha256((data["mean"]["base64"] + data["components"]["base64"]).encode("ascii")).hexdigest()


def _read_json(path: str | Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfidenceError(f"{path}: unreadable {what} ({err})") from err


def expected_calibration_error(confidence: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """ECE: the share-weighted mean |predicted - observed| over ``bins`` equal-width confidence bins."""
    confidence, outcome = np.asarray(confidence, float), np.asarray(outcome, float)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - outcome[mask].mean())
    return float(total) if math.isfinite(total) else float("nan")
