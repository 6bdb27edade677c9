import subprocess
import sys
import textwrap

import pytest

import zoo
from zoo.errors import ZooError
from zoo.registry import register_model

ALL = ["bi-gru", "bi-lstm", "bi-simple-rnn", "bi-tanh-rnn", "gru", "lstm", "simple-rnn", "tanh-rnn"]


def test_list_models_wildcards():
    assert set(ALL) <= set(zoo.list_models())
    assert zoo.list_models("bi-*") == ["bi-gru", "bi-lstm", "bi-simple-rnn", "bi-tanh-rnn"]
    assert zoo.list_models("*gru") == ["bi-gru", "gru"]
    assert zoo.list_models("nothing*") == []


def test_model_info():
    info = zoo.model_info("lstm")
    assert info.layer == "LSTM" and info.cudnn
    assert info.params["units"] == 128 and "recurrent_dropout" in info.params
    assert not zoo.model_info("tanh-rnn").cudnn
    assert zoo.model_info("bi-gru").layer == "Bidirectional(GRU)"
    assert _cudnn_eligible(zoo.build_model("lstm")[0])
    assert _cudnn_eligible(zoo.build_model("bi-gru")[0].forward_layer)
    assert not _cudnn_eligible(zoo.build_model("lstm", recurrent_dropout=0.1)[0])


def _cudnn_eligible(layer) -> bool:
    """What Keras asks of an LSTM/GRU before it takes the fused cuDNN kernel on a GPU."""
    c = layer.get_config()
    return (c["activation"] == "tanh" and c["recurrent_activation"] == "sigmoid"
            and c["recurrent_dropout"] == 0 and not c["unroll"] and c["use_bias"]
            and c.get("reset_after", True) and c.get("use_cudnn", "auto") in ("auto", True))


def test_unknown_builder_lists_closest():
    with pytest.raises(ZooError, match=r"unknown model builder 'lstn'.*did you mean: lstm"):
        zoo.build_model("lstn")


def test_unknown_hparam_names_itself_and_accepted():
    with pytest.raises(ZooError) as exc:
        zoo.build_model("gru", unitz=3)
    msg = str(exc.value)
    assert "'unitz'" in msg and "did you mean: units" in msg and "accepted: units, layers" in msg


def test_register_twice_is_an_error():
    with pytest.raises(ZooError, match="already registered"):
        register_model("lstm", layer="LSTM", description="again")(lambda **kw: [])


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_builders_make_a_trainable_body(name):
    import keras
    import numpy as np

    body = zoo.build_model(name, layers=2, units=4, return_sequences=True)
    assert len(body) == 2
    inp = keras.Input((None, 3))
    x = inp
    for layer in body:
        x = layer(x)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    width = 8 if name.startswith("bi-") else 4
    assert model.layers[-2].output.shape[-1] == width
    hist = model.fit(np.ones((4, 5, 3)), np.zeros((4, 5, 1)), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def test_last_state_body():
    import keras

    body = zoo.build_model("lstm", layers=2, units=6)
    x = keras.Input((7, 2))
    y = x
    for layer in body:
        y = layer(y)
    assert tuple(y.shape) == (None, 6)


@pytest.mark.slow
def test_entry_point_plugin(tmp_path):
    """A package that declares a `zoo.models` entry point shows up in `zoo models`."""
    pkg = tmp_path / "zooplugin_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from zoo import register_model

        @register_model("demo-rnn", layer="SimpleRNN", description="a plugin builder")
        def demo(*, units: int = 3, return_sequences=False, stateful=False):
            import keras
            return [keras.layers.SimpleRNN(units, return_sequences=return_sequences)]
        """))
    dist = tmp_path / "zooplugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zooplugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[zoo.models]\ndemo = zooplugin_demo\n")
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "models", "demo*"], capture_output=True,
                         text=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "demo-rnn" in out.stdout and "a plugin builder" in out.stdout
