"""The sentiment task: many-to-one classification of texts.

Data: the Rotten Tomatoes sentences rated by people (default), or the user's CSV/TSV, one
folder per label, or one file per label.  Texts are tokenized with NLTK (no downloaded data),
mapped through a vocabulary of the training split (id 1 for words outside it) and padded at
the end with id 0, which the embedding masks, so padding never changes a prediction.
Model: Embedding(mask_zero) -> recurrent body (last state, or pooling over every step) ->
softmax over the labels.  With ``model.init_from`` (a registered word model, e.g. a word-lm
trained on unlabelled text) the vocabulary, embedding and recurrent weights come from it
(:mod:`zoo.warm_start`).
Test metrics from scikit-learn: accuracy, macro F1, per-class precision and recall, and a
confusion-matrix plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from zoo.errors import ZooError
from zoo.schema import ENCODING, Strict
from zoo.tasks import register_task
from zoo.tasks.base import (LoadedModel, Prepared, Split, Task, as_list, hash_arrays,
                            majority_accuracy, package_url, prior_loss, sequence_network)

FAST_EXAMPLES = 64


class SentimentData(Strict):
    """sentiment's ``data`` section: labelled texts, their splits and their tokens."""

    path: str | None = Field(None, description=(
        "Your labelled texts, relative to the recipe (or to the working directory): a CSV or "
        "TSV file, a folder with one sub-folder per label (one example per file), or a folder "
        "of files, one per label (one example per line); see data.format. null: the 10,605 "
        "Rotten Tomatoes sentences rated by people. Labels are the strings found there; every "
        "label needs at least 3 examples."))
    test_path: str | None = Field(None, description=(
        "A held-out test set of your own, read like data.path (its labels must be among the "
        "training ones); test_fraction is then unused. null: the test split is cut from "
        "data.path."))
    format: str = Field("auto", pattern="^(auto|csv|tsv|folders|files)$", description=(
        "How data.path is read. csv / tsv: a header row, then one example a row, the columns "
        "text_column and label_column. folders: PATH/LABEL/one-example-per-file (aclImdb's "
        "layout; a folder unsup is skipped). files: one file per label, one example a line; "
        "the label is the file name without .txt, or the suffix of any other name "
        "(rt-polarity.pos -> pos). auto: .csv / .tsv / .tab by suffix, a folder with "
        "sub-folders as folders, any other folder as files."))
    encoding: str = ENCODING
    text_column: str = Field("text", description="csv / tsv: the column holding the text.")
    label_column: str = Field("label", description="csv / tsv: the column holding the label.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description=(
        "The part held out for validation, stratified by label and drawn with train.seed."))
    test_fraction: float = Field(0.1, gt=0, lt=1, description=(
        "The part held out for the test metrics (stratified, drawn with train.seed); unused "
        "with data.test_path."))
    vocabulary_size: int = Field(20000, ge=3, description=(
        "The most frequent training words kept, padding and unknown included; other words "
        "become the unknown word (the run logs the oov_rate). With model.init_from, the "
        "source model's vocabulary is used instead."))
    lowercase: bool = Field(True, description="Lowercase texts before tokenizing.")
    max_length: int = Field(60, ge=1, description=(
        "Tokens kept per text: longer texts are cut, shorter ones padded (padding is masked "
        "and never changes a prediction)."))


class SentimentOptions(Strict):
    """sentiment's ``task`` section: the embedding and how the body's steps become one vector."""

    embedding_dim: int = Field(64, ge=1, description=(
        "Size of each word's embedding vector (with model.init_from, the source model's)."))
    # how the body's steps become one vector: its last state, or max / mean / attention
    # pooling over every (unpadded) step
    pooling: Literal["last", "max", "mean", "attention"] = Field("last", description=(
        "How the recurrent body's steps become one vector for the classifier: its last state, "
        "or max, mean or attention pooling over every (unpadded) step."))
    embedding_dropout: float = Field(0.0, ge=0, lt=1, description=(
        "The fraction of whole words dropped during training (a regularizer)."))


def encode_texts(texts: list[str], tokenizer, vocab, max_length: int) -> np.ndarray:
    """Token ids, truncated to ``max_length`` and right-padded with 0."""
    out = np.zeros((len(texts), max_length), np.int32)
    for i, t in enumerate(texts):
        ids = vocab.encode(tokenizer.tokenize(t))[:max_length]
        out[i, : len(ids)] = ids
    return out


def _preprocessors(pre: dict[str, Any]):
    from zoo.data.text import WordTokenizer, WordVocab

    return WordTokenizer.from_json(pre["tokenizer"]), WordVocab.from_json(pre["vocab"])


class SentimentModel(LoadedModel):
    """``predict(texts)`` -> [{"label": ..., "probabilities": {label: p}}] per text."""

    def predict(self, texts) -> list[dict[str, Any]]:
        texts = as_list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ZooError(f"predict: text {i} is {type(t).__name__} ({t!r:.40}), not a string")
            if not t.strip():
                raise ZooError(f"predict: text {i} is empty")
        if not texts:
            return []
        return self.predict_encoded(self.encode(texts))

    # the two halves of predict, for batch prediction (zoo.predict) to run side by side
    def encode(self, texts: list[str]) -> np.ndarray:
        """Texts (strings, not empty) -> padded token ids, as the model takes them."""
        if getattr(self, "_pre", None) is None:
            self._pre = _preprocessors(self.preprocessing)
        tokenizer, vocab = self._pre
        return encode_texts(texts, tokenizer, vocab, self.preprocessing["max_length"])

    def predict_encoded(self, x: np.ndarray, batch_size: int = 256) -> list[dict[str, Any]]:
        # one traced call per batch: Model.predict's set-up on every call cost about 0.15 s
        # here (2-core CPU), as much as 3 batches of 256 texts through an LSTM(64)
        if getattr(self, "_call", None) is None:
            import tensorflow as tf

            model = self.keras_model
            spec = tf.TensorSpec([None, self.preprocessing["max_length"]], tf.int32)
            self._call = tf.function(lambda t: model(t, training=False), input_signature=[spec])
        probs = np.concatenate([self._call(x[i:i + batch_size]).numpy()
                                for i in range(0, len(x), batch_size)]) if len(x) else \
            np.zeros((0, len(self.preprocessing["labels"])), np.float32)
        labels = self.preprocessing["labels"]
        return [{"label": labels[int(p.argmax())],
                 "probabilities": {lab: float(p[j]) for j, lab in enumerate(labels)}}
                for p in probs]

    def _pyfunc(self, inputs: list) -> Any:
        import pandas as pd

        rows = []
        for r in self.predict(inputs):
            rows.append({"label": r["label"],
                         **{f"probability_{k}": v for k, v in r["probabilities"].items()}})
        return pd.DataFrame(rows)


@register_task
class SentimentTask(Task):
    name = "sentiment"
    Options = SentimentOptions
    Data = SentimentData
    main_metric = "accuracy"
    greater_is_better = True
    directions = {"loss": "min", "accuracy": "max", "macro_f1": "max", "precision_*": "max",
                  "recall_*": "max"}
    warm_starts = True

    @property
    def return_sequences(self) -> bool:  # pooling reads every step; else the last state
        return self.options.pooling != "last"
    loaded_class = SentimentModel

    def _examples(self):
        from zoo.data import sentiment

        d = self.data
        if d.path is None:
            return sentiment.load_rotten_tomatoes(), {
                "source": "rotten-tomatoes (vaderSentiment 3.3.2)",
                "source_url": package_url(sentiment.PACKAGE)}
        p = self.resolve_path(d.path, "data.path")
        ex = sentiment.load_labelled(p, d.format, encoding=d.encoding,
                                     text_column=d.text_column, label_column=d.label_column)
        return ex, {"source": str(p)}

    def _test_examples(self, labels: list[str]):
        """``data.test_path``, read like ``data.path``; its labels must be the training ones."""
        from zoo.data import sentiment

        d = self.data
        p = self.resolve_path(d.test_path, "data.test_path")
        ex = sentiment.load_labelled(p, d.format, encoding=d.encoding,
                                     text_column=d.text_column, label_column=d.label_column)
        unknown = sorted({label for _, label in ex} - set(labels))
        if unknown:
            raise ZooError(f"{p}: data.test_path: label(s) {', '.join(map(repr, unknown))} are not "
                           f"among the training labels ({', '.join(map(repr, labels))})")
        return ex

    def prepare(self, fast: bool = False) -> Prepared:
        from zoo.data.sentiment import stratified_split
        from zoo.data.text import WordTokenizer, WordVocab

        d = self.data
        examples, info = self._examples()
        labels = sorted({label for _, label in examples})
        counts = {label: sum(1 for _, lab in examples if lab == label) for label in labels}
        small = [f"{k} ({v})" for k, v in counts.items() if v < 3]
        if small:
            raise ZooError(f"{info['source']}: too few examples to split for label(s) {', '.join(small)}; "
                           "each label needs at least 3")
        test_given = self._test_examples(labels) if d.test_path is not None else None
        try:
            train, val, test = stratified_split(examples, d.val_fraction,
                                                0.0 if test_given else d.test_fraction,
                                                self.recipe.train.seed)
        except ValueError as exc:
            raise ZooError(f"{info['source']}: cannot split {len(examples)} examples into "
                           f"train/val/test by label: {exc}") from None
        if test_given:
            test = test_given
            info["test_source"] = str(self.resolve_path(d.test_path, "data.test_path"))
        if self.init_source is not None:   # model.init_from: the source model's words and ids
            tokenizer, vocab = _preprocessors(self.init_source.preprocessing)
            info["vocabulary_from"] = self.recipe.init_from
        else:
            tokenizer = WordTokenizer(lowercase=d.lowercase)
            vocab = WordVocab.build((tokenizer.tokenize(t) for t, _ in train), d.vocabulary_size)
        if fast:
            train, val, test = train[:FAST_EXAMPLES], val[:FAST_EXAMPLES], test[:FAST_EXAMPLES]
        index = {label: i for i, label in enumerate(labels)}

        def split(items) -> Split:
            x = encode_texts([t for t, _ in items], tokenizer, vocab, d.max_length)
            y = np.array([index[label] for _, label in items], np.int32)
            return Split(x, y)

        tr, va, te = split(train), split(val), split(test)
        pre = {"tokenizer": tokenizer.to_json(), "vocab": vocab.to_json(), "labels": labels,
               "max_length": d.max_length}
        words = tr.x[tr.x != 0]
        info.update(examples=len(examples), labels=", ".join(labels), vocabulary=len(vocab),
                    train=len(tr), val=len(va), test=len(te),
                    oov_rate=round(float((words == vocab.unk_id).mean()) if words.size else 0.0, 4))
        return Prepared(tr, va, te, pre, hash_arrays(tr.x, tr.y, va.x, te.x, te.y), info,
                        extra={"test_texts": [t for t, _ in test]})

    def build(self, prepared: Prepared, body: list, batch_size: int):
        pre = prepared.preprocessing
        return sequence_network(body, name="sentiment", input_name="tokens",
                                outputs=len(pre["labels"]), activation="softmax",
                                vocab_size=len(pre["vocab"]["words"]),
                                embedding_dim=self.options.embedding_dim, mask_zero=True,
                                embedding_dropout=self.options.embedding_dropout,
                                pooling=self.options.pooling)

    def compile_args(self) -> dict[str, Any]:
        return {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}

    def evaluate(self, model, prepared: Prepared, batch_size: int) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

        labels = prepared.preprocessing["labels"]
        test = prepared.test
        probs = model.predict(test.x, batch_size=batch_size, verbose=0)
        pred = probs.argmax(axis=-1)
        loss = model.evaluate(test.x, test.y, batch_size=batch_size, verbose=0, return_dict=True)["loss"]
        ids = list(range(len(labels)))
        p, r, _, _ = precision_recall_fscore_support(test.y, pred, labels=ids, zero_division=0)
        out = {"loss": float(loss), "accuracy": float(accuracy_score(test.y, pred)),
               "macro_f1": float(f1_score(test.y, pred, labels=ids, average="macro", zero_division=0))}
        for i, label in enumerate(labels):
            out[f"precision_{label}"] = float(p[i])
            out[f"recall_{label}"] = float(r[i])
        return out

    def baseline(self, prepared: Prepared) -> dict[str, float]:
        """Always the most frequent label of the training split (accuracy); always the
        training split's label frequencies (loss)."""
        return {"accuracy": majority_accuracy(prepared.train, prepared.test),
                "loss": prior_loss(prepared.train, prepared.test,
                                   len(prepared.preprocessing["labels"]))}

    def plots(self, model, prepared: Prepared, outdir: Path) -> list[Path]:
        from zoo import plots
        from sklearn.metrics import ConfusionMatrixDisplay

        labels = prepared.preprocessing["labels"]
        pred = model.predict(prepared.test.x, verbose=0).argmax(axis=-1)
        fig, ax = plots.figure(figsize=(1.2 * len(labels) + 3, 1.2 * len(labels) + 2.5))
        ConfusionMatrixDisplay.from_predictions(prepared.test.y, pred, labels=list(range(len(labels))),
                                                display_labels=labels, ax=ax, colorbar=False)
        ax.set_title("confusion matrix (test split)")
        path = outdir / "confusion_matrix.png"
        plots.save(fig, path)
        return [path]

    def input_example(self, prepared: Prepared) -> Any:
        return prepared.extra["test_texts"][:2]
