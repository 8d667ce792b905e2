"""Hostile model files: load_model refuses them in one line (a ModelFileError or
UntrustedModelError), before Keras reads them, without hanging, crashing or allocating much."""

import json
import os
import signal
import sys
import tempfile
import tracemalloc
import zipfile

import h5py
import keras
import numpy as np
import pytest

from subnet.errors import ModelFileError, UntrustedModelError
from subnet.models import (
    DropoutInfo,
    architecture,
    deserialization_scope,
    dropout_layers,
    files,
    load_model,
    original_names,
    with_dropout,
)


@pytest.fixture(scope="module")
def x4():
    return np.random.default_rng(0).random((4, 6), dtype=np.float32)


def small_model(name="small"):
    inputs = keras.Input((6,), name="features")
    x = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def rewrite_keras_config(path, edit, *, out=None, extra=None):
    """Copies the .keras archive ``path`` to ``out`` (default: in place) with config.json passed
    through ``edit`` (a function of the config dict returning bytes or a dict)."""
    with zipfile.ZipFile(path) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    new = edit(json.loads(members["config.json"]))
    members["config.json"] = new if isinstance(new, bytes) else json.dumps(new).encode()
    members.update(extra or {})
    out = out or path
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out


@pytest.fixture()
def no_hang():
    """Fails a test that blocks instead of letting it hang the suite."""
    def timeout(*_):
        raise TimeoutError("load_model blocked")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------- not a regular file

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path, no_hang):
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match=r"model.keras' is not a regular file \(it is a FIFO"):
        load_model(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_is_refused_without_reading_it(no_hang):
    with pytest.raises(ModelFileError, match="not a regular file.*character device"):
        load_model("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_link_to_a_fifo_is_refused(tmp_path, no_hang):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", tmp_path / "model.h5")
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model(tmp_path / "model.h5")


def test_path_must_be_a_path():
    with pytest.raises(TypeError, match="argument `path`.*Received: int"):
        load_model(3)
    with pytest.raises(ModelFileError, match="Cannot read model file 'a.*embedded null"):
        load_model("a\0b.keras")


# ---------------------------------------------------------------------------- deep nesting

def with_deep_json(config, deep_text):
    """The config as JSON bytes, with ``deep_text`` in the hidden layer's config (json.dumps
    itself cannot write JSON nested deeper than the recursion limit)."""
    config["config"]["layers"][1]["config"]["junk"] = "__DEEP__"
    return json.dumps(config).replace('"__DEEP__"', deep_text).encode()


@pytest.mark.parametrize("depth", [150, 5000, 100_000])
def test_deeply_nested_architecture_is_refused(tmp_path, depth):
    path = tmp_path / "deep.keras"
    small_model().save(path)
    rewrite_keras_config(path, lambda c: with_deep_json(c, "[" * depth + "0" + "]" * depth))
    with pytest.raises(ModelFileError, match=r"deep.keras' has an architecture nested more than "
                                             r"100 levels"):
        load_model(path)


@pytest.mark.parametrize("levels", [30, 400])
def test_deeply_nested_models_are_refused_in_h5(tmp_path, levels):
    path = tmp_path / "deep.h5"
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        text = json.dumps(config["config"]["layers"][1])
        for _ in range(levels):  # a model in a model in a model ...
            text = '{"class_name": "Functional", "config": {"name": "m", "layers": [' + text + "]}}"
        config["config"]["layers"][1] = "__DEEP__"
        f.attrs["model_config"] = json.dumps(config).replace('"__DEEP__"', text)
    with pytest.raises(ModelFileError, match="nested more than 100 levels"):
        load_model(path)


def deeply_nested_code(depth):
    """A code object whose constants nest ``depth`` code objects; the innermost names
    ``dropout`` and the outermost holds the rate 0.25. It is never run."""
    code = compile("dropout", "<perma>", "eval")
    for _ in range(depth):
        code = compile("0", "<perma>", "eval").replace(co_consts=(code,))
    return code.replace(co_consts=(code, 0.25))


def test_deeply_nested_dropout_lambda_code_is_read_under_trust(tmp_path):
    path = tmp_path / "perma.keras"
    inputs = keras.Input((6,))
    x = keras.layers.Lambda(lambda t: keras.random.dropout(t, 0.5), name="perma")(inputs)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    import base64
    import marshal
    depth = 990  # deeper than Python's recursion limit, within marshal's
    assert depth + 50 > sys.getrecursionlimit()
    code = base64.b64encode(marshal.dumps(deeply_nested_code(depth))).decode()

    def swap_code(config):
        config["config"]["layers"][1]["config"]["function"]["config"]["code"] = code
        return config

    rewrite_keras_config(path, swap_code)
    with pytest.raises(UntrustedModelError, match="'perma' \\(Lambda\\)"):
        load_model(path)
    assert dropout_layers(load_model(path, trust=True)) == [DropoutInfo("perma", 0.25, True)]


# ---------------------------------------------------------------------------- sizes and bombs

def test_config_json_bomb_is_refused_before_reading(tmp_path):
    path = tmp_path / "bomb.keras"
    small_model().save(path)
    with zipfile.ZipFile(path) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in members.items():
            if name != "config.json":
                z.writestr(name, data)
        with z.open("config.json", "w", force_zip64=True) as f:
            f.write(members["config.json"][:-1])
            for _ in range(300):  # 300 MB of spaces in about 1 MB on disk
                f.write(b" " * 2**20)
            f.write(b"}")
    assert path.stat().st_size < 3 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=r"bomb.keras' declares a config.json of "
                                                 r"314,5\d\d,\d\d\d bytes, more than subnet reads"):
            load_model(path)
        assert tracemalloc.get_traced_memory()[1] < 20 * 2**20
    finally:
        tracemalloc.stop()


def test_config_json_over_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.keras"
    small_model().save(path)
    rewrite_keras_config(path, lambda c: json.dumps(c).encode() + b" " * 50_000)
    monkeypatch.setattr(files, "MAX_CONFIG_BYTES", 20_000)
    # The message names the limit where assigning it changes what load_model enforces.
    with pytest.raises(ModelFileError, match=r"declares a config.json of [\d,]+ bytes.*"
                                             r"subnet\.models\.files\.MAX_CONFIG_BYTES"):
        load_model(path)


def test_h5_model_config_over_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.h5"
    small_model().save(path)
    monkeypatch.setattr(files, "MAX_CONFIG_BYTES", 1000)
    with pytest.raises(ModelFileError, match="big.h5' declares an architecture of"):
        load_model(path)


def test_h5_large_attribute_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "attr.h5"
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        f["model_weights"].attrs["junk"] = np.zeros(5000, dtype="S1")
    monkeypatch.setattr(files, "MAX_CONFIG_BYTES", 1000)
    with pytest.raises(ModelFileError, match=r"declares an HDF5 attribute '/model_weights@junk'"):
        load_model(path)


def test_compressed_member_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "EXPANSION_FLOOR_BYTES", 2**20)
    path = tmp_path / "bomb.keras"
    small_model().save(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("assets/zeros.bin", bytes(20 * 2**20))
    with pytest.raises(ModelFileError, match=r"decompression bomb: zip member 'assets/zeros.bin' "
                                             r"declares 20,971,520 bytes"):
        load_model(path)


def test_archive_with_too_many_members_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "many.keras"
    small_model().save(path)
    monkeypatch.setattr(files, "MAX_ZIP_MEMBERS", 3)
    load_model(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("assets/extra.txt", "x")
    with pytest.raises(ModelFileError, match="many.keras' lists 4 archive members"):
        load_model(path)


def add_shape_bomb(group):
    group.create_dataset("bomb", shape=(2**30,), dtype="float32", chunks=(2**20,),
                         compression="gzip")  # 4 GiB declared, nothing stored


def test_h5_shape_bomb_is_refused(tmp_path):
    path = tmp_path / "shape.h5"
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        add_shape_bomb(f["model_weights"]["hidden"])
    with pytest.raises(ModelFileError, match=r"bomb: HDF5 dataset '/model_weights/hidden/bomb' "
                                             r"declares 4,294,967,296 bytes"):
        load_model(path)


def test_shape_bomb_inside_a_keras_archive_is_refused(tmp_path):
    path = tmp_path / "shape.keras"
    small_model().save(path)
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(path) as z:
        weights.write_bytes(z.read("model.weights.h5"))
    with h5py.File(weights, "r+") as f:
        add_shape_bomb(f)
    rewrite_keras_config(path, lambda c: c, extra={"model.weights.h5": weights.read_bytes()})
    with pytest.raises(ModelFileError, match="HDF5 dataset 'model.weights.h5: /bomb'"):
        load_model(path)


def test_h5_links_to_other_files_are_refused(tmp_path):
    path = tmp_path / "link.h5"
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        f["model_weights"]["elsewhere"] = h5py.ExternalLink("/etc/passwd", "/")
    with pytest.raises(ModelFileError, match="link '/model_weights/elsewhere' to another object"):
        load_model(path)


def test_h5_link_cycles_are_walked_once(tmp_path, monkeypatch):
    path = tmp_path / "cycle.h5"
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        loop = f["model_weights"].create_group("loop")
        loop["again"], loop["and_again"] = loop, loop  # hard links back to the group
    load_model(path)
    monkeypatch.setattr(files, "MAX_H5_OBJECTS", 10)
    with pytest.raises(ModelFileError, match="more than 10 HDF5 objects"):
        load_model(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_absurd_layer_size_is_refused_before_allocation(tmp_path, suffix):
    path = tmp_path / f"huge{suffix}"
    small_model().save(path)

    def huge(config):
        config["config"]["layers"][1]["config"]["units"] = 10**12
        return config

    if suffix == ".keras":
        rewrite_keras_config(path, huge)
    else:
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = json.dumps(huge(json.loads(f.attrs["model_config"])))
    with pytest.raises(ModelFileError, match=r"declares [\d,]{17,18} parameters, "
                                             r"more than subnet loads \(2,147,483,648"):
        load_model(path)


def test_parameter_limit_is_a_module_constant(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    small_model().save(path)
    monkeypatch.setattr(files, "MAX_PARAMETERS", 40)
    with pytest.raises(ModelFileError, match=r"declares 53 parameters.*largest weight is "
                                             r"'hidden/kernel' with 30"):
        load_model(path)
    monkeypatch.setattr(files, "MAX_PARAMETERS", 53)
    assert load_model(path).count_params() == 53


# ---------------------------------------------------------------------------- code anywhere

def lambda_time_distributed():
    inputs = keras.Input((3, 4))
    x = keras.layers.TimeDistributed(keras.layers.Lambda(lambda t: t * 2.0, name="inner"),
                                     name="td")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)), "'inner' (Lambda)"


def lambda_activation():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, activation=lambda t: t * 3.0, name="act")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)), "'act' (Dense)"


def lambda_initializer():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, kernel_initializer=lambda shape, dtype=None: keras.ops.ones(shape),
                           name="init")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)), "'init' (Dense)"


def lambda_in_nested_model():
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, keras.layers.Lambda(lambda t: t + 1.0, name="deep")(inner_in),
                        name="block")
    inputs = keras.Input((6,))
    x = inner(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)), "'deep' (Lambda)"


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")
@pytest.mark.parametrize("build", [lambda_time_distributed, lambda_activation,
                                   lambda_initializer, lambda_in_nested_model])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_code_anywhere_gets_the_untrusted_code_message(tmp_path, build, suffix):
    model, label = build()
    path = tmp_path / f"code{suffix}"
    model.save(path)
    with pytest.raises(UntrustedModelError) as info:
        load_model(path)
    message = str(info.value)
    assert label in message and "--trust-model" in message and "trust=True" in message
    assert "truncated" not in message


def test_tfsm_layer_is_code(tmp_path):
    path = tmp_path / "tfsm.keras"
    small_model().save(path)

    def add_tfsm(config):
        config["config"]["layers"][1] = {"module": "keras.layers", "class_name": "TFSMLayer",
                                         "config": {"name": "saved", "filepath": "/tmp/x"}}
        return config

    rewrite_keras_config(path, add_tfsm)
    with pytest.raises(UntrustedModelError, match=r"'saved' \(TFSMLayer\).*--trust-model"):
        load_model(path)


def test_marshalled_code_anywhere_is_code(tmp_path):
    path = tmp_path / "hidden.keras"
    small_model().save(path)
    import base64
    import marshal
    code = base64.b64encode(marshal.dumps(compile("1", "<x>", "eval"))).decode()

    def hide(config):
        config["config"]["layers"][2]["config"]["bias_constraint"] = {"anything": [code]}
        return config

    rewrite_keras_config(path, hide)
    with pytest.raises(UntrustedModelError, match=r"'classifier' \(Dense\)"):
        load_model(path)


def test_polyglot_hdf5_and_zip_is_refused(tmp_path):
    h5 = tmp_path / "clean.h5"
    small_model().save(h5)
    archive = tmp_path / "code.keras"
    lambda_time_distributed()[0].save(archive)
    polyglot = tmp_path / "polyglot.keras"  # HDF5 from its start, a zip from its end
    polyglot.write_bytes(h5.read_bytes() + archive.read_bytes())
    assert zipfile.is_zipfile(polyglot) and h5py.is_hdf5(polyglot)
    with pytest.raises(ModelFileError, match="polyglot.keras' is both a zip archive and an HDF5"):
        load_model(polyglot)


def test_zip_with_an_hdf5_model_behind_it_is_refused(tmp_path):
    h5 = tmp_path / "code.h5"
    lambda_time_distributed()[0].save(h5)  # what an .h5 reader would load
    polyglot = tmp_path / "polyglot.h5"
    with h5py.File(h5, "r") as src, h5py.File(polyglot, "w", userblock_size=4096) as dst:
        for key in src:
            src.copy(src[key], dst, name=key)
        for key, value in src.attrs.items():
            dst.attrs[key] = value
    archive = tmp_path / "clean.keras"  # what subnet would have checked: a clean config.json
    small_model().save(archive)
    with zipfile.ZipFile(archive) as z:
        config = z.read("config.json")
    with zipfile.ZipFile(head := tmp_path / "head.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config)
    assert head.stat().st_size <= 4096
    with open(polyglot, "r+b") as f:  # the zip in the HDF5 user block
        f.write(head.read_bytes())
    assert zipfile.is_zipfile(polyglot) and h5py.is_hdf5(polyglot)
    with pytest.raises(ModelFileError, match="polyglot.h5' is both a zip archive and an HDF5"):
        load_model(polyglot)


def test_too_many_layers_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    small_model().save(path)
    monkeypatch.setattr(files, "MAX_LAYERS", 2)
    with pytest.raises(ModelFileError, match=r"declares more than 2 layers "
                                             r"\(subnet\.models\.files\.MAX_LAYERS\)"):
        load_model(path)
    monkeypatch.setattr(files, "MAX_LAYERS", 3)
    load_model(path)


@pytest.mark.parametrize("saved, named", [(".h5", "model.keras"), (".keras", "model.bin")])
def test_format_is_read_from_content_not_name(tmp_path, saved, named, x4):
    model = small_model()
    model.save(tmp_path / f"m{saved}")
    os.replace(tmp_path / f"m{saved}", tmp_path / named)
    np.testing.assert_allclose(load_model(tmp_path / named).predict(x4, verbose=0),
                               model.predict(x4, verbose=0), atol=1e-6)


# ---------------------------------------------------------------------------- trust sticks

def test_trusted_lambda_model_can_be_copied(tmp_path, x4):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="hidden")(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "lambda.keras"
    model.save(path)
    trusted = load_model(path, trust=True)
    off = with_dropout(trusted, False)
    np.testing.assert_allclose(np.asarray(off(x4)), model.predict(x4, verbose=0), atol=1e-6)
    on = with_dropout(trusted, True, seed=1)
    assert not np.array_equal(np.asarray(on(x4)), np.asarray(off(x4)))
    # Other modules copy through the same scope.
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.models.clone_model(trusted)
    with deserialization_scope(trusted):
        clone = keras.models.clone_model(trusted)
    assert isinstance(clone.get_layer("doubler"), keras.layers.Lambda)


def test_deserialization_scope_is_unsafe_only_for_models_with_code():
    model = lambda_time_distributed()[0]
    config = model.get_layer("td").layer.get_config()
    with deserialization_scope(small_model()), pytest.raises(ValueError, match="safe_mode"):
        keras.layers.Lambda.from_config(dict(config))
    with deserialization_scope(model):
        assert keras.layers.Lambda.from_config(dict(config)).name == "inner"
    with pytest.raises(TypeError, match="keras.Model"):
        with deserialization_scope("model.keras"):
            pass


# ---------------------------------------------------------------------------- names

HOSTILE_NAMES = {"model": "mo del", "features": "in put ä", "hidden": 'hid"den <b> $HOME',
                 "classifier": "clas'sifier\x1b[2J"}


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_names_tensorflow_refuses_are_renamed_and_kept(tmp_path, suffix, x4):
    model = small_model()
    path = tmp_path / f"names{suffix}"
    model.save(path)
    expected = model.predict(x4, verbose=0)

    def rename(config):
        text = json.dumps(config)
        for old, new in {**HOSTILE_NAMES, "small": HOSTILE_NAMES["model"]}.items():
            text = text.replace(json.dumps(old), json.dumps(new))
        return json.loads(text)

    if suffix == ".keras":
        rewrite_keras_config(path, rename)
    else:
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = json.dumps(rename(json.loads(f.attrs["model_config"])))
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict(x4, verbose=0), expected, atol=1e-6)
    names = original_names(loaded)
    assert sorted(names.values()) == sorted(HOSTILE_NAMES.values())
    assert names["mo_del"] == "mo del" and loaded.name == "mo_del"
    assert names["hid_den__b___HOME"] == 'hid"den <b> $HOME'
    assert {layer.name for layer in loaded.layers} == {"in_put__", "hid_den__b___HOME",
                                                        "clas_sifier__2J"}
    assert original_names(with_dropout(loaded, False)) == names
    assert original_names(small_model()) == {}


def test_renamed_names_stay_unique(tmp_path, x4):
    model = small_model()
    path = tmp_path / "clash.keras"
    model.save(path)
    rewrite_keras_config(path, lambda c: json.loads(json.dumps(c).replace('"hidden"', '"my x"')
                                                    .replace('"features"', '"my_x"')))
    loaded = load_model(path)
    assert original_names(loaded) == {"my_x_2": "my x"}
    loaded.predict(x4, verbose=0)


def test_control_characters_from_the_file_are_escaped(tmp_path):
    inputs = keras.Input((6,))
    x = keras.layers.Lambda(lambda t: t, name="ok")(inputs)
    path = tmp_path / "ctl.keras"
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(path)
    hostile = '"\\u001b]0;pwned\\u0007"'  # sets the terminal's title
    rewrite_keras_config(path, lambda c: json.dumps(c).replace('"ok"', hostile).encode())
    with pytest.raises(UntrustedModelError) as info:
        load_model(path)
    assert "\x1b" not in str(info.value) and "\\x1b]0;pwned\\x07" in str(info.value)


def test_deep_walkers_are_iterative():
    # The walkers see configs deeper than the recursion limit without recursing.
    config = {"class_name": "Functional", "config": {"name": "m", "layers": []}}
    layer = config
    for i in range(3000):
        inner = {"class_name": "Functional", "name": f"m{i}", "config": {"layers": []}}
        layer["config"]["layers"].append(inner)
        layer = inner
    assert len(list(architecture._walk_layer_configs(config))) == 3000
    assert architecture._code_in_config(config) == []
    assert len(architecture._code_objects(deeply_nested_code(3000))) == 3002


def _corrupt_member(path, out, name, payload):
    """``path`` with an extra deflated member ``name`` whose compressed bytes are damaged."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(name, payload, compress_type=zipfile.ZIP_DEFLATED)
    raw = bytearray(out.read_bytes())
    start = raw.index(name.encode()) + len(name)  # the member's data follows its local header
    raw[start:start + 8] = b"\xff" * 8
    out.write_bytes(bytes(raw))
    return out


def test_refused_and_malformed_archives_leave_nothing_in_the_temporary_directory(
        tmp_path, monkeypatch, x4):
    """Keras extracts a .keras archive with extra files into a folder of the temporary
    directory and left it there when the load failed; load_model removes it."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    good = tmp_path / "good.keras"
    small_model().save(good)
    with_assets = rewrite_keras_config(good, lambda c: c, out=tmp_path / "assets.keras",
                                       extra={"assets/notes.txt": b"kept with the model"})
    broken = _corrupt_member(good, tmp_path / "broken.keras", "assets/notes.txt",
                             bytes(range(256)) * 64)
    inputs = keras.Input((6,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Dense(3)(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "code.keras")
    code = rewrite_keras_config(tmp_path / "code.keras", lambda c: c,
                                out=tmp_path / "code_assets.keras",
                                extra={"assets/notes.txt": b"x"})
    with pytest.raises(ModelFileError, match=r"Could not load model file .*broken\.keras"):
        load_model(broken)
    for path in (tmp_path / "code.keras", code):
        with pytest.raises(UntrustedModelError, match=r"--trust-model"):
            load_model(path)
    with pytest.raises(ModelFileError, match=r"Could not load model file .*code_broken"):
        load_model(_corrupt_member(code, tmp_path / "code_broken.keras", "assets/more.txt",
                                   bytes(range(256)) * 64), trust=True)
    np.testing.assert_allclose(load_model(with_assets)(x4), small_model_outputs(good, x4))
    assert sorted(p.name for p in temp.iterdir()) == []


def small_model_outputs(path, x):
    return keras.models.load_model(path)(x)
