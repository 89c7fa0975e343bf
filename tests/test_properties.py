"""Property-based tests (hypothesis): caption parsing, the tokenizer, and decoding."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.pipeline.data import clean_caption, load_dataset
from captioner.serving.decoding import beam_search, greedy_decode
from captioner.serving.vocab import Vocabulary

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@given(st.text(max_size=200))
def test_cleaning_yields_lowercase_words_only(text):
    cleaned = clean_caption(text)
    assert cleaned == " ".join(cleaned.split())
    assert all(w.isascii() and w.isalpha() and w.islower() for w in cleaned.split())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=30))
def test_token_file_parsing_never_crashes(tmp_path_factory, lines):
    from PIL import Image

    root = tmp_path_factory.mktemp("ds")
    (root / "images").mkdir()
    Image.new("RGB", (4, 4)).save(root / "images" / "a.jpg")
    (root / "Flickr8k.token.txt").write_text("a.jpg#0\ta dog\n" + "\n".join(lines) + "\n", encoding="utf-8")
    ds = load_dataset(root)
    assert "a dog" in ds.captions["a.jpg"]
    # a bad line is counted, never fatal (a bare "\r" also ends a line, as in any text file)
    assert ds.malformed_lines <= len((root / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines())


@given(st.lists(st.lists(WORDS, min_size=1, max_size=10), min_size=1, max_size=20),
       st.lists(WORDS, max_size=12))
def test_tokenizer_round_trip_and_unknown_words(training, sentence):
    vocab = Vocabulary.fit((" ".join(ws) for ws in training), min_count=1)
    known = [w for w in sentence if w in vocab.index]
    assert vocab.decode(vocab.encode(" ".join(known))) == " ".join(known)
    ids = vocab.encode(" ".join(sentence))
    assert len(ids) == len(sentence) + 2
    for word, i in zip(sentence, ids[1:-1]):
        assert i == (vocab.index[word] if word in vocab.index else vocab.unk_id)


class RandomModel:
    def __init__(self, table):
        self.table = table

    def initial_state(self, features):
        return (np.zeros((len(features), 1)),)

    def step(self, words, state):
        return np.log(self.table[np.asarray(words)]), state


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 12), st.floats(0.0, 1.5))
def test_decoding_outputs_are_valid(seed, width, max_words, alpha):
    rng = np.random.default_rng(seed)
    vocab_size = 9
    logits = rng.normal(size=(vocab_size, vocab_size)) * 2
    logits[:, [0, 1]] = -np.inf  # never <pad> or <start>
    table = np.exp(logits - logits.max(1, keepdims=True))
    table /= table.sum(1, keepdims=True)
    model = RandomModel(table)
    hyps = beam_search(model, np.zeros(1), 1, 2, beam_width=width, max_words=max_words, length_alpha=alpha,
                       n_best=width)
    assert 1 <= len(hyps) <= width
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for h in hyps:
        assert len(h.ids) <= max_words and all(3 <= i < vocab_size for i in h.ids)
    [g] = greedy_decode(model, np.zeros((1, 1)), 1, 2, max_words=max_words)
    assert len(g.ids) <= max_words and all(3 <= i < vocab_size for i in g.ids)
