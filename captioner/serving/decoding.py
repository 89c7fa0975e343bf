"""Greedy and beam-search caption generation against a small step interface.

The decoder is anything with
    ``initial_state(features (B, D)) -> state``  (a tuple of arrays, batch first) and
    ``step(words (B,), state) -> (log_probs (B, V), state)``,
so these functions are unit-tested with a fake model and a hand-written probability table.
A step model that can say where it looked also has
    ``step_with_attention(words, state) -> (log_probs (B, V), state, attention (B, L))``,
and with ``keep_attention`` every hypothesis keeps one (L,) map per word from the very decode that
chose its words.

``decode_with(stepper, features, vocab, DecodeConfig)`` is the one function that turns a DecodeConfig
into a decoding stack (``<unk>`` suppression, n-gram blocking, greedy or beam): serving, evaluation,
held-out selection and SCST all call it, each with the config it means.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ..config import check_block_ngram

State = tuple  # of np.ndarray, each (B, ...)


class StepModel(Protocol):
    def initial_state(self, features: np.ndarray) -> State: ...

    def step(self, words: np.ndarray, state: State) -> tuple[np.ndarray, State]: ...

    # optional: ``reorder(state, rows) -> state`` picks rows of every state array (beam search's
    # reshuffle). Compiled steppers keep their state as tensors and gather inside TensorFlow; without
    # it, the state arrays are indexed with NumPy.
    # optional: ``step_with_attention(words, state) -> (log_probs, state, attention (B, L))``.


def take_step(model: StepModel, words: np.ndarray, state: State, keep_attention: bool = False):
    """One step: ``(log_probs (B, V), state, attention (B, L) or None)``."""
    if keep_attention:
        return model.step_with_attention(words, state)
    log_probs, state = model.step(words, state)
    return log_probs, state, None


def reorder_state(model: StepModel, state: State, rows: Sequence[int]) -> State:
    """The state rows ``rows`` (beam search keeps, repeats and drops beams between steps)."""
    if hasattr(model, "reorder"):
        return model.reorder(state, rows)
    return tuple(s[rows] for s in state)


@dataclass
class Hypothesis:
    """One generated caption: word ids (no start/end markers), total log-probability, ranking score."""

    ids: list[int]
    log_prob: float
    finished: bool  # True when the model chose <end>; False when cut at the length limit
    score: float = field(default=0.0)
    attention: list[np.ndarray] | None = field(default=None, repr=False)  # one (L,) map per word, when kept


def length_normalised(log_prob: float, n_words: int, finished: bool, alpha: float) -> float:
    """``log p / length ** alpha``; the <end> token counts as one step, so length >= 1."""
    length = n_words + (1 if finished else 0)
    return log_prob / max(length, 1) ** alpha if alpha else log_prob


def repeated_ngram_words(ids: Sequence[int], n: int) -> list[int]:
    """Words that would repeat an n-gram already in ``ids`` if appended ("a man in a man in" with n=3
    forbids "in" after "... a man"). ``n`` < 2 blocks nothing."""
    if n < 2 or len(ids) < n - 1:
        return []
    prefix = tuple(ids[len(ids) - n + 1:])
    return [ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i:i + n - 1]) == prefix]


def block_repeats(log_probs: np.ndarray, hypotheses: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """``log_probs`` (B, V) with each row's repeat-making words set to -inf (a copy when anything changes);
    ``n`` 0 blocks nothing, and ``n`` 1 or below 0 is a ValueError (``check_block_ngram``)."""
    if n < 2:
        check_block_ngram(n)
        return log_probs
    blocked = None
    for row, ids in enumerate(hypotheses):
        words = repeated_ngram_words(ids, n)
        if words:
            blocked = log_probs.copy() if blocked is None else blocked
            blocked[row, words] = -np.inf
    return log_probs if blocked is None else blocked


class SuppressWords:
    """A step model that never proposes some words (``<unk>``: a caption saying "unk" helps nobody)."""

    def __init__(self, model: StepModel, word_ids: Sequence[int]):
        self.model, self.word_ids = model, list(word_ids)

    def initial_state(self, features: np.ndarray) -> State:
        return self.model.initial_state(features)

    def step(self, words: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        log_probs, state = self.model.step(words, state)
        return self._suppress(log_probs), state

    def step_with_attention(self, words: np.ndarray, state: State):
        log_probs, state, attention = self.model.step_with_attention(words, state)
        return self._suppress(log_probs), state, attention

    def _suppress(self, log_probs: np.ndarray) -> np.ndarray:
        log_probs = np.array(log_probs)  # a writable copy
        log_probs[:, self.word_ids] = -np.inf
        return log_probs

    def reorder(self, state: State, rows: Sequence[int]) -> State:
        return reorder_state(self.model, state, rows)


def extend_captions(ids: list[list[int]], done: np.ndarray, words: np.ndarray, end_id: int) -> bool:
    """Append each unfinished caption's next word, or mark it done on <end>; True once all are done."""
    for b in np.flatnonzero(~done):
        if words[b] == end_id:
            done[b] = True
        else:
            ids[b].append(int(words[b]))
    return bool(done.all())


def greedy_decode(model: StepModel, features: np.ndarray, start_id: int, end_id: int,
                  max_words: int = 30, length_alpha: float = 0.0, block_ngram: int = 0,
                  keep_attention: bool = False) -> list[Hypothesis]:
    """Most likely next word at every step, for a batch of images at once.

    features: (B, D). ``block_ngram`` n >= 2 never lets a caption repeat one of its own n-grams.
    Returns one Hypothesis per image.
    """
    features = np.asarray(features)
    batch = features.shape[0]
    state = model.initial_state(features)
    words = np.full(batch, start_id, dtype=np.int32)
    ids: list[list[int]] = [[] for _ in range(batch)]
    log_prob = np.zeros(batch, dtype=np.float64)
    done = np.zeros(batch, dtype=bool)
    maps: list[list[np.ndarray]] = [[] for _ in range(batch)]
    for step in range(max_words + 1):
        log_probs, state, attention = take_step(model, words, state, keep_attention)  # (B, V), (B, L)
        log_probs = block_repeats(log_probs, ids, block_ngram)
        if step == max_words:  # out of room: the caption ends here, with <end> only if it is the best word
            best = log_probs.argmax(axis=1)
            for b in np.flatnonzero(~done & (best == end_id)):
                log_prob[b] += log_probs[b, end_id]
                done[b] = True
            break
        words = log_probs.argmax(axis=1).astype(np.int32)
        live = np.flatnonzero(~done)
        log_prob[live] += log_probs[live, words[live]]
        if attention is not None:
            for b in live:
                if words[b] != end_id:
                    maps[b].append(np.asarray(attention[b]))
        if extend_captions(ids, done, words, end_id):
            break
    return [Hypothesis(ids[b], float(log_prob[b]), bool(done[b]),
                       length_normalised(float(log_prob[b]), len(ids[b]), bool(done[b]), length_alpha),
                       maps[b] if keep_attention else None)
            for b in range(batch)]


def beam_search(model: StepModel, features: np.ndarray, start_id: int, end_id: int, beam_width: int = 3,
                max_words: int = 30, length_alpha: float = 0.7, n_best: int = 1,
                block_ngram: int = 0, keep_attention: bool = False) -> list[Hypothesis]:
    """Beam search for ONE image; returns the ``n_best`` hypotheses, best score first.

    features: (D,) or (1, D). See ``beam_search_batch`` for the algorithm. Width 1 is exactly greedy.
    """
    return beam_search_batch(model, np.asarray(features)[None], start_id, end_id, beam_width,
                             max_words, length_alpha, n_best, block_ngram, keep_attention)[0]


class _Beam:
    """The search state of one image: live and finished hypotheses."""

    def __init__(self, keep_attention: bool = False):
        self.live = [Hypothesis([], 0.0, False, attention=[] if keep_attention else None)]
        self.finished: list[Hypothesis] = []
        self.done = False

    def advance(self, log_probs: np.ndarray, step: int, end_id: int, beam_width: int, max_words: int,
                length_alpha: float, block_ngram: int = 0, attention: np.ndarray | None = None) -> list[int]:
        """Extend the live hypotheses with their (L, V) next-word log-probs (and (L, regions) attention
        when kept); return the parent row of each new live hypothesis (indices into ``log_probs``)."""
        log_probs = block_repeats(log_probs, [h.ids for h in self.live], block_ngram)
        totals = np.array([h.log_prob for h in self.live])[:, None] + log_probs  # (L, V)
        if step == max_words:
            # No room for more words: finish with <end> if it is each beam's best choice, else cut.
            for b, h in enumerate(self.live):
                ends = int(log_probs[b].argmax()) == end_id
                self.finished.append(Hypothesis(h.ids, float(totals[b, end_id]) if ends else h.log_prob, ends,
                                                attention=h.attention))
            self.live, self.done = [], True
            return []
        flat = totals.ravel()
        n_candidates = min(2 * beam_width, flat.size)
        top = np.argpartition(-flat, n_candidates - 1)[:n_candidates]
        top = top[np.lexsort((top, -flat[top]))]  # best first; ties broken by index for determinism
        vocab = log_probs.shape[1]
        new_live, parents = [], []
        for rank, j in enumerate(top):
            if not np.isfinite(flat[j]):
                break  # only blocked words are left (tiny vocabularies); they are never candidates
            parent, word = divmod(int(j), vocab)
            before = self.live[parent]
            if word == end_id:
                if rank < beam_width:
                    self.finished.append(Hypothesis(before.ids, float(flat[j]), True, attention=before.attention))
            elif len(new_live) < beam_width:
                maps = None if attention is None else before.attention + [np.asarray(attention[parent])]
                new_live.append(Hypothesis(before.ids + [word], float(flat[j]), False, attention=maps))
                parents.append(parent)
        self.live = new_live
        for h in (*self.finished, *self.live):
            h.score = length_normalised(h.log_prob, len(h.ids), h.finished, length_alpha)
        if not self.live or _search_is_done(self.finished, self.live, beam_width):
            self.done = True
            return []
        return parents

    def best(self, n_best: int, length_alpha: float) -> list[Hypothesis]:
        for h in (*self.finished, *self.live):
            h.score = length_normalised(h.log_prob, len(h.ids), h.finished, length_alpha)
        ranked = sorted(self.finished, key=lambda h: -h.score)
        if len(ranked) < n_best:
            ranked += sorted(self.live, key=lambda h: -h.score)[: n_best - len(ranked)]
        return ranked[:n_best]


def beam_search_batch(model: StepModel, features: np.ndarray, start_id: int, end_id: int, beam_width: int = 3,
                      max_words: int = 30, length_alpha: float = 0.7, n_best: int = 1,
                      block_ngram: int = 0, keep_attention: bool = False) -> list[list[Hypothesis]]:
    """Beam search for a batch of images at once: every live beam of every image goes through the
    model in ONE step call (batched along the batch axis). Returns B lists of ``n_best`` hypotheses.

    Each step looks at the best ``2k`` expansions of an image's beams: an ``<end>`` among the first ``k``
    finishes a caption (never expanded again), and the best ``k`` others stay live. An image's search
    stops at ``max_words``, or once ``k`` captions have finished and no live one scores better than the
    k-th of them; if too few finished, the best unfinished ones fill in.
    """
    if beam_width < 1 or n_best < 1:
        raise ValueError("beam_width and n_best must be at least 1")
    features = np.asarray(features)
    beams = [_Beam(keep_attention) for _ in range(len(features))]
    state = model.initial_state(features)  # row b belongs to image b
    rows = [[b] for b in range(len(features))]  # each image's live beams -> rows of `state`
    for step in range(max_words + 1):
        active = [b for b, beam in enumerate(beams) if not beam.done]
        if not active:
            break
        gather = [r for b in active for r in rows[b]]
        last = np.array([h.ids[-1] if h.ids else start_id for b in active for h in beams[b].live], np.int32)
        log_probs, state, attention = take_step(model, last, reorder_state(model, state, gather),
                                                keep_attention)  # (sum of live beams, V)
        offset = 0
        for b in active:
            n = len(beams[b].live)
            parents = beams[b].advance(log_probs[offset:offset + n], step, end_id, beam_width, max_words,
                                       length_alpha, block_ngram,
                                       None if attention is None else attention[offset:offset + n])
            rows[b] = [offset + p for p in parents]
            offset += n
    return [beam.best(n_best, length_alpha) for beam in beams]


def _search_is_done(finished: list[Hypothesis], live: list[Hypothesis], beam_width: int) -> bool:
    """Stop once ``beam_width`` captions have finished and none of the live ones scores better than the
    worst of those now (with raw log-probabilities that is exact: live scores can only fall)."""
    if len(finished) < beam_width:
        return False
    kth_best_finished = sorted((h.score for h in finished), reverse=True)[beam_width - 1]
    return max(h.score for h in live) <= kth_best_finished


def decode_batch(model: StepModel, features: np.ndarray, start_id: int, end_id: int, beam_width: int = 3,
                 max_words: int = 30, length_alpha: float = 0.7, n_best: int = 1,
                 block_ngram: int = 0, keep_attention: bool = False) -> list[list[Hypothesis]]:
    """Captions for (B, D) features, the whole batch at once: greedy when ``beam_width == 1 and
    n_best == 1``, otherwise batched beam search. Returns B lists of hypotheses."""
    features = np.asarray(features)
    if beam_width == 1 and n_best == 1:
        return [[h] for h in greedy_decode(model, features, start_id, end_id, max_words, length_alpha, block_ngram,
                                           keep_attention)]
    return beam_search_batch(model, features, start_id, end_id, beam_width, max_words, length_alpha, n_best,
                             block_ngram, keep_attention)


def decoding_stack(stepper: StepModel, vocab, decode) -> StepModel:
    """The step model a DecodeConfig asks for: ``stepper``, wrapped so it never proposes the padding or
    ``<start>`` markers (not words: a caption's ids and its text must match word for word), nor ``<unk>``
    unless ``decode.allow_unk``. (N-gram blocking needs each hypothesis's words, so the search applies it.)"""
    never = [vocab.pad_id, vocab.start_id] + ([] if decode.allow_unk else [vocab.unk_id])
    return SuppressWords(stepper, never)


def decode_with(stepper: StepModel, features: np.ndarray, vocab, decode,
                keep_attention: bool = False) -> list[list[Hypothesis]]:
    """B lists of hypotheses for (B, ...) features, decoded exactly as the DecodeConfig ``decode`` says."""
    decode.validate()
    return decode_batch(decoding_stack(stepper, vocab, decode), features, vocab.start_id, vocab.end_id,
                        decode.beam_width, decode.max_words, decode.length_alpha, decode.n_best,
                        decode.block_ngram, keep_attention)


def sequence_log_prob(model: StepModel, features: np.ndarray, ids: Sequence[int], start_id: int,
                      end_id: int) -> float:
    """Log-probability the model gives to ``ids`` followed by <end> (for tests and diagnostics)."""
    state = model.initial_state(np.asarray(features)[None])
    total, prev = 0.0, start_id
    for word in [*ids, end_id]:
        log_probs, state = model.step(np.array([prev], np.int32), state)
        total += float(log_probs[0, word])
        prev = word
    return total
