import pytest

from conftest import RECIPES, write
from zoo.errors import ZooError
from zoo.recipe import load_recipe

ECHO = """
task: echo
data: {total_series_length: 300, eval_series_length: 150, truncated_backprop_length: 5}
model: {name: tanh-rnn, units: 4}
train: {epochs: 2, batch_size: 5, seed: 3}
"""


def err(tmp_path, text, overrides=(), name="r.yaml"):
    path = write(tmp_path / name, text)
    with pytest.raises(ZooError) as exc:
        load_recipe(path, overrides)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_defaults_and_registered_name(tmp_path):
    r = load_recipe(write(tmp_path / "r.yaml", ECHO))
    assert r.task == "echo" and r.model == "tanh-rnn"
    assert r.hparams["units"] == 4 and r.hparams["layers"] == 1
    assert r.registered_name == "tanh-rnn-echo"
    assert r.train.optimizer.name == "adam" and r.track.promote == "if-better"
    assert r.flat_params()["model.units"] == "4"


def test_overrides(tmp_path):
    r = load_recipe(write(tmp_path / "r.yaml", ECHO),
                    ["train.epochs=3", "model.units=64", "model.name=gru",
                     "train.optimizer.learning_rate=0.5", "track.registered_name=my-echo"])
    assert r.train.epochs == 3 and r.hparams["units"] == 64 and r.model == "gru"
    assert r.train.optimizer.learning_rate == 0.5 and r.registered_name == "my-echo"
    assert r.digest() != load_recipe(tmp_path / "r.yaml").digest()


def test_extends_merges_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", ECHO)
    r = load_recipe(write(tmp_path / "sub" / "child.yaml",
                          "extends: ../base.yaml\nmodel: {name: lstm}\ntrain: {epochs: 7}\n"))
    assert r.model == "lstm" and r.hparams["units"] == 4      # units inherited
    assert r.train.epochs == 7 and r.train.batch_size == 5   # batch inherited
    assert r.data.truncated_backprop_length == 5


def test_extends_cycle_and_missing(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n" + ECHO)
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    assert "cycle" in err(tmp_path, "extends: a.yaml\n", name="c.yaml")
    assert "extends: file not found" in err(tmp_path, "extends: nope.yaml\n" + ECHO)


@pytest.mark.parametrize("text,overrides,expected", [
    (ECHO.replace("epochs: 2", "epcohs: 2"), (), "train.epcohs: unknown key (did you mean: epochs?)"),
    (ECHO, ("train.epochs=0",), "train.epochs: input should be greater than or equal to 1"),
    (ECHO, ("train.epochs=many",), "train.epochs: input should be a valid integer"),
    (ECHO, ("model.units=0",), "model.units: must be at least 1"),
    (ECHO, ("model.units=1.5",), "model.units: expected int"),
    (ECHO, ("model.dropout=1.5",), "model.dropout: must be in [0, 1)"),
    (ECHO, ("model.unitz=3",), "model.unitz: model 'tanh-rnn' has no hyperparameter 'unitz' (did you mean: units?)"),
    (ECHO, ("model.name=lstn",), "model.name: unknown model builder 'lstn' (did you mean: lstm"),
    (ECHO, ("task=ekho",), "task.name: unknown task 'ekho' (did you mean: echo?)"),
    (ECHO, ("train.optimizer.name=adamm",), "train.optimizer.name: input should be"),
    (ECHO, ("train.precision=fp8",), "train.precision: input should be"),
    (ECHO + "trian: {}\n", (), "unknown section 'trian' (did you mean: train"),
    (ECHO, ("data.echo_stepp=2",), "data.echo_stepp: unknown key (did you mean: echo_step?)"),
    (ECHO, ("train.distribute=mirrored",), "train.distribute: task 'echo' trains a stateful model"),
    ("task: echo\n", (), "model.name: required key is missing"),
    ("model: {name: lstm}\n", (), "task: required section is missing"),
    ("task: [echo\n", (), "invalid YAML"),
    ("- a\n- b\n", (), "a recipe must be a mapping"),
    ("", (), "recipe is empty"),
    (ECHO, ("trainepochs",), "expected KEY.PATH=VALUE"),
])
def test_validation_errors(tmp_path, text, overrides, expected):
    msg = err(tmp_path, text, overrides)
    assert expected in msg
    if "KEY.PATH" not in expected:
        assert "r.yaml" in msg  # names the file


def test_missing_file(tmp_path):
    with pytest.raises(ZooError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_is_read_safely(tmp_path):
    msg = err(tmp_path, "task: !!python/object/apply:os.system ['echo hacked']\n")
    assert "invalid YAML" in msg


def test_every_shipped_recipe_validates():
    names = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert "echo.yaml" in names
    for path in RECIPES.glob("*.yaml"):
        load_recipe(path)
