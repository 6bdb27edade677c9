"""``model.init_from``: start a model from a registered word model instead of from random.

The new model takes the source's tokenizer and vocabulary (so a word has the same id in both),
its embedding matrix, and its recurrent layers' weights, layer by layer from the bottom.  A
bidirectional layer over a one-way source gets the source layer's weights in both directions.
What a warm start needs of the two models (the same embedding width, recurrent layers of the
same kind and size) is checked before training, with one line naming what differs.  The
heads are never copied: the new task's head starts from random.
"""

from __future__ import annotations

from typing import Any

from zoo.errors import ZooError


def load_source(recipe):
    """The registered model named by ``model.init_from``, checked to have a word vocabulary."""
    from zoo import loading

    where = f"{recipe.path}: model.init_from"
    try:
        source = loading.load(recipe.init_from)
    except ZooError as exc:
        raise ZooError(f"{where}: {exc}") from None
    pre = source.preprocessing
    vocab, tok = pre.get("vocab"), pre.get("tokenizer")
    if not (isinstance(vocab, dict) and isinstance(vocab.get("words"), list) and isinstance(tok, dict)):
        raise ZooError(f"{where}: {recipe.init_from} is a {source.task} model, which has no word "
                       "vocabulary to share; warm starts come from word models (word-lm, sentiment)")
    return source


def _recurrent(model) -> list:
    import keras

    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]


def _directions(layer) -> list:
    import keras

    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def _describe(layer) -> str:
    import keras

    inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
    kind = type(inner).__name__
    if isinstance(layer, keras.layers.Bidirectional):
        kind = f"Bidirectional {kind}"
    return f"{kind} of {inner.cell.units if hasattr(inner, 'cell') else '?'} units"


def _shapes(layer) -> list[tuple]:
    return [tuple(w.shape) for w in layer.weights]


def copy_weights(model, source, recipe) -> list[str]:
    """Copy the embedding and recurrent weights of ``source`` (a LoadedModel) into ``model``;
    returns what was copied, in words.  Raises ZooError before changing anything if the two
    do not fit."""
    where = f"{recipe.path}: model.init_from: {recipe.init_from}"
    src = source.keras_model
    try:
        emb_src, emb_dst = src.get_layer("embedding"), model.get_layer("embedding")
    except ValueError:
        raise ZooError(f"{where} has no word embedding to start from") from None
    (src_rows, src_dim), (dst_rows, dst_dim) = emb_src.weights[0].shape, emb_dst.weights[0].shape
    if src_dim != dst_dim:
        raise ZooError(f"{where} embeds words in {src_dim} dimensions, this recipe in {dst_dim}: "
                       f"set task.embedding_dim: {src_dim}")
    if src_rows != dst_rows:   # the task takes the source's vocabulary, so this is a bug
        raise ZooError(f"{where} has {src_rows} words, this model {dst_rows}")
    plan: list[tuple[Any, Any]] = [(emb_src, emb_dst)]
    src_rnn, dst_rnn = _recurrent(src), _recurrent(model)
    if len(src_rnn) < len(dst_rnn):
        raise ZooError(f"{where} has {len(src_rnn)} recurrent layer(s), this recipe "
                       f"{len(dst_rnn)}: set model.layers to at most {len(src_rnn)}")
    for i, (s, d) in enumerate(zip(src_rnn, dst_rnn), start=1):
        s_dir = _directions(s)
        for j, d_one in enumerate(_directions(d)):
            s_one = s_dir[min(j, len(s_dir) - 1)]
            if _shapes(s_one) != _shapes(d_one):
                raise ZooError(f"{where}: its recurrent layer {i} is {_describe(s)}, this "
                               f"recipe's is {_describe(d)} (weights {_shapes(s_one)} vs "
                               f"{_shapes(d_one)}); use the same model.name and model.units")
            plan.append((s_one, d_one))
    for s_one, d_one in plan:
        d_one.set_weights(s_one.get_weights())
    return [f"embedding {src_rows} x {src_dim}"] + [
        f"recurrent layer {i} ({_describe(d)})" for i, d in enumerate(dst_rnn, start=1)]
