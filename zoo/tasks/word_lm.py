"""The word-level language model of the classic RNN tutorial.

The corpus (Shakespeare's plays by default, whole plays held out, or a user text file) is
split into sentences by a Punkt tokenizer trained on the corpus itself and into words by
NLTK's regular-expression tokenizer.  The ``vocabulary_size`` most frequent training words
are kept (the rest become ``<unk>``), each sentence is wrapped in ``<s>`` … ``</s>``, and the
model learns to predict each next word.  Padding is masked, so loss and perplexity are means
over real words.  A unigram model of the training words gives the baseline perplexity.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Any

import numpy as np
from pydantic import Field

from zoo.errors import ZooError
from zoo.schema import ENCODING, Strict
from zoo.tasks import register_task
from zoo.tasks.base import (LoadedModel, Prepared, Split, Task, hash_arrays, read_corpus,
                            sequence_network)

START, END = "<s>", "</s>"
FAST_SENTENCES = 64
# a speaker heading is the first line of a speech: at the start or after a blank line
_SPEAKER_LINE = re.compile(r"(?:\A|(?<=\n\n))[^\n]{1,60}:\n")


class WordLMData(Strict):
    """word-lm's ``data`` section: the text, its splits, sentences and vocabulary."""

    path: str | None = Field(None, description=(
        "A plain text file, relative to the recipe (or to the working directory), split into "
        "sentences and words; its contiguous parts are training, then val_fraction, then "
        "test_fraction of its characters. null: Shakespeare's plays, whole plays held out."))
    encoding: str = ENCODING
    val_fraction: float = Field(0.05, gt=0, lt=1, description=(
        "The part held out for validation: of the characters of data.path, or of the plays."))
    test_fraction: float = Field(0.05, gt=0, lt=1, description=(
        "The part held out for the test perplexity: of the characters of data.path, or of "
        "the plays. val_fraction + test_fraction must be below 1."))
    vocabulary_size: int = Field(8000, ge=5, description=(
        "The most frequent training words kept (with padding, <unk>, <s> and </s>); the "
        "others become <unk>."))
    lowercase: bool = Field(True, description="Lowercase the text before tokenizing.")
    max_length: int = Field(30, ge=2, description=(
        "Words kept per sentence; longer sentences are cut (the model then never sees their "
        "end), and generated sentences are at most this long."))
    max_sentences: int | None = Field(None, ge=1, description=(
        "Train on at most this many sentences, drawn with train.seed (validation and test "
        "keep a tenth as many); null: all of them."))


class WordLMOptions(Strict):
    """word-lm's ``task`` section."""

    embedding_dim: int = Field(64, ge=1, description="Size of each word's embedding vector.")


def detokenize(words: list[str]) -> str:
    text = " ".join(words)
    text = re.sub(r" ([,.;:!?)\]'])", r"\1", text)
    return re.sub(r"([(\[]) ", r"\1", text)


def _sentences(text: str, tokenizer, source_is_play: bool) -> list[list[str]]:
    from zoo.data.text import split_sentences

    if source_is_play:
        text = _SPEAKER_LINE.sub("", text)  # speaker headings are not part of any sentence
    return [toks for s in split_sentences(text) if (toks := tokenizer.tokenize(s))]


class WordLMModel(LoadedModel):
    """``generate(n_sentences, min_length, temperature, seed)`` -> sentences of words."""

    def _setup(self):
        if getattr(self, "_sampler", None) is None:
            from zoo.data.text import WordVocab
            from zoo.sampling import Sampler

            self._vocab = WordVocab.from_json(self.preprocessing["vocab"])
            v = self._vocab.index
            # never draw padding, the unknown word or a second sentence start
            self._sampler = Sampler(self.keras_model, banned=(0, 1, v[START]))
        return self._sampler, self._vocab

    def generate(self, n_sentences: int = 3, min_length: int = 5, temperature: float = 1.0,
                 seed: int | None = 1) -> list[str]:
        for key, val, low in (("n_sentences", n_sentences, 1), ("min_length", min_length, 0)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < low:
                raise ZooError(f"generate: {key} must be a whole number >= {low}, got {val!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature < 0:
            raise ZooError(f"generate: temperature must be a number >= 0, got {temperature!r}")
        max_len = int(self.preprocessing["max_length"])
        if min_length > max_len:
            raise ZooError(f"generate: min_length {min_length} is above the model's max_length {max_len}")
        sampler, vocab = self._setup()
        end = vocab.index[END]
        base = random.SystemRandom().randrange(2**40) if seed is None else int(seed)
        done: list[str] = []
        for attempt in range(50):
            need = n_sentences - len(done)
            prime = np.full((max(need, 1) * 2, 1), vocab.index[START], np.int32)
            ids = sampler.sample(prime, max_len + 1, float(temperature), base + attempt)
            for row in ids:
                words = []
                for i in row.tolist():
                    if i == end:
                        break
                    words.append(vocab.words[i])
                else:
                    continue  # no sentence end within max_length: draw again
                if len(words) >= min_length and len(done) < n_sentences:
                    done.append(detokenize(words))
            if len(done) == n_sentences:
                return done
        raise ZooError(f"generate: could not draw {n_sentences} sentences of at least "
                       f"{min_length} words in 50 attempts (try a lower min_length)")

    def sample(self, n: int = 1, temperature: float = 1.0, seed: int | None = None,
               prime: str | None = None, length: int | None = None) -> list[str]:
        """``n`` sentences (``generate``'s defaults otherwise); a word model takes no prime."""
        if prime is not None or length is not None:
            raise ZooError("generate: a word-lm model writes whole sentences: it takes no "
                           "prime or length (use -n for the number of sentences)")
        return self.generate(n_sentences=n, temperature=temperature, seed=seed)

    def _pyfunc(self, inputs: list) -> Any:
        """Each input (a number of sentences, as int or string) -> that many sentences."""
        out = []
        for i, n in enumerate(inputs):
            try:
                k = int(n)
            except (TypeError, ValueError):
                raise ZooError(f"predict: input {i} ({n!r}) is not a number of sentences") from None
            out.append("\n".join(self.generate(k, seed=i + 1)))
        return out


@register_task
class WordLMTask(Task):
    name = "word-lm"
    Options = WordLMOptions
    Data = WordLMData
    main_metric = "perplexity"
    greater_is_better = False
    directions = {"loss": "min", "perplexity": "min", "unigram_perplexity": "min",
                  "accuracy": "max"}
    main_metric_from_loss = True
    generates = True
    loaded_class = WordLMModel

    def prepare(self, fast: bool = False) -> Prepared:
        from zoo.data.text import WordTokenizer, WordVocab

        d = self.data
        train_t, val_t, test_t, info = read_corpus(self)
        tok = WordTokenizer(lowercase=d.lowercase)
        play = d.path is None
        sents = [_sentences(t, tok, play) for t in (train_t, val_t, test_t)]
        where = f"{self.recipe.path}: data.path: {d.path}" if d.path else f"{self.recipe.path}: corpus"
        for name, s in zip(("training", "validation", "test"), sents):
            if not s:
                raise ZooError(f"{where}: the {name} split has no sentences")
        train_s, val_s, test_s = sents
        if d.max_sentences is not None:
            rng = random.Random(self.recipe.train.seed)
            train_s = rng.sample(train_s, min(d.max_sentences, len(train_s)))
            val_s = val_s[: max(1, d.max_sentences // 10)]
            test_s = test_s[: max(1, d.max_sentences // 10)]
        vocab = WordVocab.build(train_s, d.vocabulary_size, specials=(START, END))
        if fast:
            train_s, val_s, test_s = (s[:FAST_SENTENCES] for s in (train_s, val_s, test_s))
        L = d.max_length

        def split(sentences) -> Split:
            x = np.zeros((len(sentences), L + 1), np.int32)
            y = np.zeros((len(sentences), L + 1), np.int32)
            for i, words in enumerate(sentences):
                ids = vocab.encode([START, *words[:L], END])
                x[i, : len(ids) - 1] = ids[:-1]
                y[i, : len(ids) - 1] = ids[1:]
            return Split(x, y, (y != 0).astype(np.float32))

        tr, va, te = split(train_s), split(val_s), split(test_s)
        counts = Counter(int(t) for t in tr.y[tr.y != 0])
        pre = {"tokenizer": tok.to_json(), "vocab": vocab.to_json(), "max_length": L,
               "unigram_counts": {str(k): v for k, v in sorted(counts.items())}}
        info.update(vocabulary=len(vocab), train_sentences=len(tr), val_sentences=len(va),
                    test_sentences=len(te), train_words=int((tr.y != 0).sum()),
                    oov_rate=round(float((tr.y == 1).sum() / max(1, (tr.y != 0).sum())), 4))
        return Prepared(tr, va, te, pre, hash_arrays(tr.x, va.x, te.x), info)

    def build(self, prepared: Prepared, body: list, batch_size: int):
        vocab_size = len(prepared.preprocessing["vocab"]["words"])
        return sequence_network(body, name="word_lm", input_name="words", outputs=vocab_size,
                                head_name="logits", vocab_size=vocab_size,
                                embedding_dim=self.options.embedding_dim, mask_zero=True)

    def compile_args(self) -> dict[str, Any]:
        import keras

        return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "weighted_metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}

    def derived_metrics(self, logs: dict[str, float]) -> dict[str, float]:
        return {f"{p}perplexity": math.exp(min(logs[f"{p}loss"], 700.0))
                for p in ("", "val_") if f"{p}loss" in logs and math.isfinite(logs[f"{p}loss"])}

    def evaluate(self, model, prepared: Prepared, batch_size: int) -> dict[str, float]:
        out = super().evaluate(model, prepared, batch_size)
        out["unigram_perplexity"] = unigram_perplexity(prepared.preprocessing, prepared.test)
        return out

    def baseline(self, prepared: Prepared) -> dict[str, float]:
        """The add-one-smoothed unigram model of the training words; its loss as Keras reduces
        the model's (summed over the real words, divided by all positions, padding included)."""
        ppl = unigram_perplexity(prepared.preprocessing, prepared.test)
        y = prepared.test.y
        return {"perplexity": ppl, "loss": math.log(ppl) * np.count_nonzero(y) / max(1, y.size)}

    def input_example(self, prepared: Prepared) -> Any:
        return ["2"]


def unigram_perplexity(pre: dict[str, Any], split: Split) -> float:
    """Perplexity of add-one-smoothed training word frequencies on the split's real words."""
    size = len(pre["vocab"]["words"])
    counts = np.ones(size)
    for k, v in pre["unigram_counts"].items():
        counts[int(k)] += v
    logp = np.log(counts / counts.sum())
    targets = split.y[split.y != 0]
    return float(math.exp(-logp[targets].mean()))
