"""The char-rnn task: data and bad input, metrics and artifacts of a real (tiny) run, the
compiled sampler against a slow reference, and the loaded model's generate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import write
from zoo.errors import ZooError
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains char models

NAMES = ["ALICE", "BOB", "FIRST WITCH", "KING"]
WORDS = ("the king is dead long live the queen and all her men who go to war for a crown "
         "of gold but find only ashes in the morning light").split()


def play_text(chars: int = 30_000, seed: int = 0) -> str:
    """A made-up play: speaker lines as NAME: and short lines of words."""
    rng = np.random.default_rng(seed)
    out, n = [], 0
    while n < chars:
        speech = NAMES[rng.integers(len(NAMES))] + ":\n"
        for _ in range(rng.integers(1, 4)):
            speech += " ".join(rng.choice(WORDS, rng.integers(3, 9))).capitalize() + ".\n"
        out.append(speech)
        n += len(speech) + 1
    return "\n".join(out)


RECIPE = """
task: {{name: char-rnn, embedding_dim: 8, sample_prime: "ALICE:", sample_length: 60}}
data: {{path: {path}, seq_len: 20, val_fraction: 0.1, test_fraction: 0.1}}
model: {{name: {model}, units: 16, layers: 1}}
train: {{epochs: {epochs}, batch_size: 32, seed: 3, verbose: 0,
        optimizer: {{learning_rate: 0.01}}}}
track: {{experiment: char-test, registered_name: {name}}}
"""


def recipe_file(tmp_path, name="char-test", model="gru", epochs=2, path="play.txt",
                text: str | None = None, extra: str = ""):
    if text is not None:
        write(tmp_path / path, text)
    return write(tmp_path / "char.yaml",
                 RECIPE.format(path=path, model=model, epochs=epochs, name=name) + extra)


def run_recipe(path, overrides=(), **kw):
    from zoo.engine import run

    return run(load_recipe(path, overrides), echo=lambda *a: None, **kw)


# ------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny full run (2 epochs) in its own store, shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("char-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        (tmp / "mlruns").mkdir()
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
        mp.setenv("ZOO_MODEL_CACHE", str(tmp / "model-cache"))
        recipe = recipe_file(tmp, name="char-test", text=play_text())
        res = run_recipe(recipe)
        import mlflow

        import zoo

        client = mlflow.MlflowClient()
        model = zoo.load("char-test")
        yield {"res": res, "client": client, "model": model, "tmp": tmp}


def test_run_logs_bpc_perplexity_and_samples(trained):
    res, c = trained["res"], trained["client"]
    run = c.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ("loss", "val_loss", "val_bpc", "val_perplexity", "accuracy", "val_accuracy"):
        assert len(c.get_metric_history(res.run_id, key)) == 2, key
    for loss, bpc, ppl in zip(c.get_metric_history(res.run_id, "val_loss"),
                              c.get_metric_history(res.run_id, "val_bpc"),
                              c.get_metric_history(res.run_id, "val_perplexity")):
        assert bpc.value == pytest.approx(loss.value / math.log(2), rel=1e-5)
        assert ppl.value == pytest.approx(math.exp(loss.value), rel=1e-5)
    assert m["test_bpc"] == pytest.approx(m["test_loss"] / math.log(2), rel=1e-5)
    assert m["test_perplexity"] == pytest.approx(math.exp(m["test_loss"]), rel=1e-5)
    assert res.test_metrics["bpc"] == pytest.approx(m["test_bpc"], rel=1e-5)
    # the model learnt something: far below the uniform log(vocab) nats per character
    assert m["test_loss"] < 0.8 * math.log(len(set(play_text()))), m
    epochs = {f.path for f in c.list_artifacts(res.run_id, "epochs")}
    assert epochs == {"epochs/001_sample.txt", "epochs/002_sample.txt"}
    text = c.download_artifacts(res.run_id, "epochs/002_sample.txt")
    sample = open(text).read()
    assert sample.startswith("# epoch 2") and "ALICE:" in sample
    params = run.data.params
    assert params["data_info.vocab_size"] == str(len(set(play_text()[:24_000])) + 1)
    mv = c.get_model_version("char-test", res.version)
    assert mv.tags["zoo.main_metric"] == "test_bpc"


def test_loaded_model_generates_deterministically(trained):
    model = trained["model"]
    assert model.task == "char-rnn"
    a = model.generate(prime="ALICE:", length=80, temperature=0.8, seed=5)
    b = model.generate(prime="ALICE:", length=80, temperature=0.8, seed=5)
    c = model.generate(prime="ALICE:", length=80, temperature=0.8, seed=6)
    assert isinstance(a, str) and a == b and a != c
    assert a.startswith("ALICE:") and len(a) == len("ALICE:") + 80
    many = model.generate(prime="KING:\n", length=40, temperature=1.0, seed=1, n=3)
    assert isinstance(many, list) and len(many) == 3 and len(set(many)) > 1
    assert all(t.startswith("KING:\n") and len(t) == 46 for t in many)
    assert model.generate(prime="B", length=0, seed=1) == "B"


def test_greedy_is_the_argmax_path(trained):
    model = trained["model"]
    greedy = model.generate(prime="BOB:\n", length=30, temperature=0, seed=1)
    assert greedy == model.generate(prime="BOB:\n", length=30, temperature=0, seed=99)
    assert greedy == model.generate(prime="BOB:\n", length=30, temperature=1e-4, seed=7)
    ids = list(model.vocab.encode("BOB:\n"))
    for _ in range(30):
        logits = model.keras_model.predict(np.asarray([ids], np.int32), verbose=0)[0, -1]
        logits[0] = -np.inf
        ids.append(int(np.argmax(logits)))
    assert greedy == model.vocab.decode(ids)


def test_loaded_bundle_and_pyfunc(trained):
    import mlflow

    from zoo.bundle import load as load_bundle

    c, res = trained["client"], trained["res"]
    path = c.download_artifacts(res.run_id, "model", str(trained["tmp"] / "dl"))
    model = load_bundle(path)
    assert model.generate("ALICE:", 50, 0.5, seed=2) == trained["model"].generate(
        "ALICE:", 50, 0.5, seed=2)
    out = model.pyfunc_predict(["ALICE:", "KING:"])
    assert len(out) == 2 and out[0].startswith("ALICE:") and out[1].startswith("KING:")
    pyf = mlflow.pyfunc.load_model(f"models:/char-test/{res.version}")
    got = pyf.predict(["BOB:"])
    assert len(got) == 1 and got[0].startswith("BOB:") and len(got[0]) > 100


def test_generate_rejects_bad_input(trained):
    model = trained["model"]
    with pytest.raises(ZooError, match=r"prime has characters .*'#'.*'Z'|'Z'.*'#'"):
        model.generate(prime="ZZ#", length=10)
    for kwargs, word in [({"temperature": -0.5}, "temperature"), ({"length": -1}, "length"),
                         ({"n": 0}, "n must"), ({"prime": ""}, "prime"),
                         ({"temperature": float("nan")}, "temperature")]:
        with pytest.raises(ZooError, match=word):
            model.generate(**{"prime": "ALICE:", **kwargs})


# --------------------------------------------------------------------------- fast dev run


def test_fast_dev_run(store, tmp_path):
    recipe = recipe_file(tmp_path, name="char-fast", model="lstm", epochs=5, text=play_text())
    res = run_recipe(recipe, fast_dev_run=True)
    assert res.epochs_run == 1
    t = res.test_metrics
    assert t["bpc"] == pytest.approx(t["loss"] / math.log(2)) and t["perplexity"] > 1
    import zoo

    text = zoo.load("char-fast").generate("KING:", 20, seed=1)
    assert text.startswith("KING:") and len(text) == 25


# ------------------------------------------------------------------------- carried state


def test_windows_in_rows_read_each_stretch_in_order():
    from zoo.tasks.char_rnn import windows

    ids = np.arange(1003, dtype=np.int32)
    w = windows(ids, 10, rows=4)          # 1002 inputs: 4 stretches of 25 windows (2 dropped)
    assert w.x.shape == w.y.shape == (100, 10)
    for k in range(25):                   # batch k holds window k of every stretch
        for r in range(4):
            start = r * 250 + 10 * k
            assert w.x[4 * k + r].tolist() == list(range(start, start + 10))
    assert np.array_equal(w.y, w.x + 1)
    one = windows(ids, 10)                # one stretch: the plain windows, in order
    assert np.array_equal(one.x.reshape(-1), ids[:1000]) and np.array_equal(one.y, one.x + 1)


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("char-carry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("ZOO_MODEL_CACHE", str(tmp / "model-cache"))
        recipe = recipe_file(tmp, name="char-carry", text=play_text())
        res = run_recipe(recipe, ["data.carry_state=true"])
        import zoo

        yield {"res": res, "model": zoo.load("char-carry")}


def test_carried_state_scores_each_character_after_all_the_text_before_it(carried):
    """With data.carry_state the test loss is that of reading each of the batch's stretches of
    the test text from its start, in one pass: the same as the registered (not stateful) model
    running over each whole stretch at once.  Windows started from a zero state score worse."""
    from zoo.data.text import split_by_fraction

    model, res = carried["model"], carried["res"]
    assert not any(getattr(layer, "stateful", False) for layer in model.keras_model.layers)
    test_text = split_by_fraction(play_text(), 0.1, 0.1)[2]
    ids = np.asarray(model.vocab.encode(test_text), np.int32)
    rows, per = 32, (len(ids) - 1) // 32 // 20 * 20
    x = ids[:-1][: rows * per].reshape(rows, per)
    y = ids[1:][: rows * per].reshape(rows, per)

    def loss(x, y):
        import keras

        logits = model.keras_model.predict(x, batch_size=len(x), verbose=0)
        return float(np.mean(keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))))

    carried_loss = loss(x, y)
    assert res.test_metrics["loss"] == pytest.approx(carried_loss, rel=2e-3)
    windowed = loss(x.reshape(-1, 20), y.reshape(-1, 20))   # every window from a zero state
    assert windowed > carried_loss * 1.01, (windowed, carried_loss)
    assert res.test_metrics["window_loss"] == pytest.approx(windowed, rel=2e-3)
    assert res.test_metrics["window_bpc"] == pytest.approx(windowed / math.log(2), rel=2e-3)
    text = model.generate(prime="KING:", length=30, seed=2)  # generation from the saved model
    assert text.startswith("KING:") and len(text) == 35


def test_carried_state_errors(store, tmp_path):
    from zoo.tasks.char_rnn import CharRNNTask

    recipe = recipe_file(tmp_path, text=play_text(5000))     # 500 test characters
    with pytest.raises(ZooError) as err:
        CharRNNTask(load_recipe(recipe, ["data.carry_state=true"])).prepare()
    msg = str(err.value)
    assert "the validation split has 500 characters" in msg and "\n" not in msg, msg
    assert "fewer than the 641 that data.carry_state needs (train.batch_size × data.seq_len" \
        in msg and "play.txt" in msg and "data.carry_state: false" in msg, msg
    assert CharRNNTask(load_recipe(recipe, ["data.carry_state=true", "train.batch_size=8"])
                       ).prepare().test.x.shape == (24, 20)   # 8 stretches of 3 windows
    with pytest.raises(ZooError, match=r"train.distribute: data.carry_state .* 'none'"):
        load_recipe(recipe, ["data.carry_state=true", "train.distribute=mirrored"])


# ---------------------------------------------------------------------- sampler vs reference


@pytest.mark.parametrize("name", ["lstm", "gru", "simple-rnn", "tanh-rnn"])
def test_sampler_carries_state_like_the_full_model(name):
    """Greedy decoding with the compiled sampler equals re-running the whole Keras model over
    the growing prefix (the slow reference), for every one-directional builder, 2 layers."""
    import keras

    import zoo
    from zoo.sampling import Sampler
    from zoo.tasks.char_rnn import char_network

    keras.utils.set_random_seed(11)
    body = zoo.build_model(name, return_sequences=True, layers=2, units=24)
    model = char_network(body, 30, 12)
    for w in model.weights:  # sharper logits, so argmax is far from ties
        w.assign(w.numpy() * 2.5)
    prime = np.array([[5, 9, 2, 7], [1, 1, 3, 28]], np.int32)
    steps = 10
    ref = prime.copy()
    for _ in range(steps):
        logits = model.predict(ref, verbose=0)[:, -1]
        logits[:, 0] = -np.inf
        ref = np.concatenate([ref, logits.argmax(-1)[:, None].astype(np.int32)], axis=1)
    for xla in (True, False):
        got = Sampler(model, banned=(0,), xla=xla).sample(prime, steps, 0.0, seed=1)
        np.testing.assert_array_equal(got, ref[:, prime.shape[1]:], err_msg=f"xla={xla}")


def test_sampler_seeded_draws():
    import keras

    import zoo
    from zoo.sampling import CHUNK, Sampler
    from zoo.tasks.char_rnn import char_network

    keras.utils.set_random_seed(2)
    model = char_network(zoo.build_model("gru", return_sequences=True, units=8), 12, 4)
    s = Sampler(model, banned=(0,))
    prime = np.full((64, 1), 3, np.int32)
    a = s.sample(prime, CHUNK + 5, 1.0, seed=4)
    assert a.shape == (64, CHUNK + 5) and a.min() >= 1 and a.max() < 12
    np.testing.assert_array_equal(a, s.sample(prime, CHUNK + 5, 1.0, seed=4))
    plain = Sampler(model, banned=(0,), xla=False)  # the same noise, drawn outside the loop
    np.testing.assert_array_equal(a, plain.sample(prime, CHUNK + 5, 1.0, seed=4))
    assert (a != s.sample(prime, CHUNK + 5, 1.0, seed=5)).any()
    assert len({tuple(r) for r in a}) > 32  # the n rows are independent draws
    assert s.sample(prime[:2], 0, 1.0, seed=4).shape == (2, 0)


def test_sampler_draws_follow_the_softmax_across_noise_blocks():
    """Each drawn id is a draw from softmax(logits / T) given the row's own prefix: summed over
    many rows, the one-hot draws at a step match the model's probabilities (z < 5 for every id),
    at the first step, and at the first and last steps of a later noise block."""
    import keras

    import zoo
    from zoo.sampling import Sampler, noise_block
    from zoo.tasks.char_rnn import char_network

    keras.utils.set_random_seed(5)
    vocab, n, temperature = 12, 3000, 0.7
    model = char_network(zoo.build_model("lstm", return_sequences=True, units=16), vocab, 6)
    for w in model.weights:  # logits far from uniform, so a wrong noise scale shows
        w.assign(w.numpy() * 3.0)
    block = noise_block(n, vocab)
    assert 1 < block < 64 and block * n * vocab <= 2**20  # several blocks in 2 x block steps
    prime = np.random.default_rng(0).integers(1, vocab, (n, 3)).astype(np.int32)
    drawn = Sampler(model, banned=(0,)).sample(prime, 2 * block, temperature, seed=9)
    seqs = np.concatenate([prime, drawn], axis=1)
    for step in (0, block, 2 * block - 1):
        logits = model.predict(seqs[:, :3 + step], verbose=0, batch_size=1000)[:, -1] / temperature
        logits[:, 0] = -np.inf
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        got = np.bincount(drawn[:, step], minlength=vocab)
        z = (got - p.sum(0)) / np.sqrt((p * (1 - p)).sum(0) + 1e-9)
        assert got[0] == 0 and np.abs(z).max() < 5, (step, got, p.sum(0).round(1))


# ------------------------------------------------------------------------------ bad input


def test_recipe_errors(tmp_path):
    write(tmp_path / "play.txt", play_text(3000))
    with pytest.raises(ZooError, match=r"model.name: 'bi-lstm' is bidirectional"):
        load_recipe(recipe_file(tmp_path, model="bi-lstm"))
    with pytest.raises(ZooError, match=r"data.encoding: unknown encoding 'klingon-8'"):
        load_recipe(recipe_file(tmp_path, extra="\n"), ["data.encoding=klingon-8"])
    with pytest.raises(ZooError, match=r"data.path: file not found: nothere.txt"):
        load_recipe(recipe_file(tmp_path, path="nothere.txt"))
    write(tmp_path / "empty.txt", "")
    with pytest.raises(ZooError, match=r"data.path: empty.txt is empty"):
        load_recipe(recipe_file(tmp_path, path="empty.txt"))
    with pytest.raises(ZooError, match=r"data.val_fraction \+ data.test_fraction"):
        load_recipe(recipe_file(tmp_path), ["data.val_fraction=0.5", "data.test_fraction=0.5"])
    with pytest.raises(ZooError, match=r"data.seq_len"):
        load_recipe(recipe_file(tmp_path), ["data.seq_len=0"])


def test_data_errors_before_any_run(store, tmp_path):
    import mlflow

    from zoo.tasks.char_rnn import CharRNNTask

    def prepare_error(recipe, overrides=()):
        with pytest.raises(ZooError) as err:
            CharRNNTask(load_recipe(recipe, overrides)).prepare()
        return str(err.value)

    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 40)
    msg = prepare_error(recipe_file(tmp_path, path="blob.bin"))
    assert "blob.bin" in msg and "\n" not in msg
    msg = prepare_error(recipe_file(tmp_path, path="tiny.txt", text="ALICE:\nHello there.\n" * 8))
    assert "data.path" in msg and "tiny.txt" in msg and "data.seq_len + 1 = 21" in msg, msg
    msg = prepare_error(recipe_file(tmp_path, text=play_text(3000)),
                        ["task.sample_prime=\"@~\""])
    assert "task.sample_prime" in msg and "'@'" in msg and "'~'" in msg, msg
    (tmp_path / "latin1.txt").write_bytes("Très bien, ça va.\n".encode("latin-1") * 400)
    msg = prepare_error(recipe_file(tmp_path, path="latin1.txt"))
    assert "latin1.txt" in msg
    assert CharRNNTask(load_recipe(recipe_file(tmp_path, path="latin1.txt"),
                                   ["data.encoding=latin-1", "task.sample_prime=T"])).prepare()
    # through the engine: the mistake is one ZooError and no MLflow run was started
    with pytest.raises(ZooError, match="tiny.txt"):
        run_recipe(recipe_file(tmp_path, path="tiny.txt"))
    assert mlflow.search_runs(search_all_experiments=True).empty


# ------------------------------------------------------------------- the default corpus


@pytest.mark.network
def test_fast_dev_run_on_shakespeare(store):
    from conftest import RECIPES

    res = run_recipe(RECIPES / "char_rnn.yaml", ["track.registered_name=char-shakespeare-fast"],
                     fast_dev_run=True)
    assert res.test_metrics["bpc"] > 0
    import zoo

    assert zoo.load("char-shakespeare-fast").generate("ROMEO:", 10, seed=1).startswith("ROMEO:")
