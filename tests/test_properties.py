"""Property-based tests (hypothesis): caption parsing, the tokenizer, and decoding."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.pipeline.data import clean_caption
from captioner.serving.decoding import beam_search, greedy_decode
from captioner.serving.vocab import Vocabulary

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@given(st.text(max_size=200))
def test_cleaning_yields_lowercase_words_only(text):
    cleaned = clean_caption(text)
    assert cleaned == " ".join(cleaned.split())
    assert all(w.isascii() and w.isalpha() and w.islower() for w in cleaned.split())


NOISE = st.text(st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)), min_size=1,
                max_size=30).filter(lambda t: t.strip())  # no tab: never a caption line


@st.composite
def token_lines(draw):
    """A token file's lines, each of a kind the test knows: (text, kind, (image, cleaned caption) or None)."""
    kind = draw(st.sampled_from(["good", "good", "missing image", "no tab", "no hash", "empty caption",
                                 "blank", "noise"]))
    words = draw(st.lists(WORDS, min_size=1, max_size=6))
    said = " ".join(words)
    written = draw(st.sampled_from([said, said.capitalize() + ".", said.upper() + " !"]))  # cleaning undoes these
    image = draw(st.sampled_from(["a.jpg", "b.jpg"]))
    number = draw(st.integers(0, 9))
    return {
        "good": (f"{image}#{number}\t{written}", "good", (image, said)),
        "missing image": (f"gone.jpg#{number}\t{written}", "missing", None),
        "no tab": (f"{image}#{number} {written}", "malformed", None),
        "no hash": (f"{image}\t{written}", "malformed", None),
        "empty caption": (f"{image}#{number}\t" + draw(st.sampled_from(["", " ", "  "])), "malformed", None),
        "blank": (draw(st.sampled_from(["", " ", "   "])), "blank", None),
        "noise": (draw(NOISE), "malformed", None),
    }[kind]


@settings(max_examples=60, deadline=None)
@given(st.lists(token_lines(), max_size=30), st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=31,
                                                      max_size=31))
def test_token_file_parsing_never_crashes(tmp_path_factory, lines, endings):
    """Catches a reader that drops or misfiles good lines, mis-counts bad ones (any count up to the number of
    lines passed before), reports the wrong line numbers, or splits lines only at "\n" (a bare "\r" or
    "\r\n" also ends a line, as in any text file): every line here is of a known kind, so the captions per
    image, the malformed count, the missing-image count and the line numbers are known exactly."""
    from PIL import Image

    from captioner.pipeline.data import load_dataset

    root = tmp_path_factory.mktemp("ds")
    (root / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (4, 4)).save(root / "images" / name)
    lines = [("a.jpg#0\tA dog.", "good", ("a.jpg", "a dog")), *lines]
    endings = list(endings)
    for i in range(len(lines) - 1):  # a bare "\r" before an empty line ending "\n" reads as one "\r\n"
        if endings[i] == "\r" and lines[i + 1][0] == "" and endings[i + 1].startswith("\n"):
            endings[i] = "\n"
    text = "".join(line + end for (line, _, _), end in zip(lines, endings))
    (root / "Flickr8k.token.txt").write_bytes(text.encode("utf-8"))
    ds = load_dataset(root)
    expected: dict[str, list[str]] = {}
    for _, kind, parsed in lines:
        if kind == "good":
            expected.setdefault(parsed[0], []).append(parsed[1])
    assert ds.captions == expected
    assert ds.malformed_lines == sum(kind == "malformed" for _, kind, _ in lines)
    assert ds.missing_images == sum(kind == "missing" for _, kind, _ in lines)
    bad_numbers = [str(i) for i, (_, kind, _) in enumerate(lines, 1) if kind == "malformed"]
    notes = [p for p in ds.problems if "malformed" in p]
    if bad_numbers:
        [note] = notes
        assert f"lines {', '.join(bad_numbers[:10])}" in note
    else:
        assert notes == []


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
