"""Controls: Scratch-E/B epochs, fresh shapes, rewinding to the parent's early weights."""

import keras
import numpy as np
import pytest

from subnet.controls import rewound, scratch, scratch_epochs, shaped
from subnet.errors import InputError
from subnet.extraction import as_keep_set, model_cost
from subnet.train import fit


def _model():
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((5, 5, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init(1), name="c1")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", kernel_initializer=init(2), name="d1")(x)
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer=init(3))(x)
    return keras.Model(inputs, outputs)


def test_scratch_epochs_follow_liu_et_al():
    assert scratch_epochs("E", 12, 1000, 100) == 12
    assert scratch_epochs("B", 12, 1000, 500) == 24  # twice the FLOPs budget per epoch
    assert scratch_epochs("B", 12, 1000, 10) == 48  # capped at 4x
    for bad in ({"kind": "C"}, {"flops": 0}, {"flops": 2000}):
        args = {"kind": "E", "parent_epochs": 12, "parent_flops": 1000, "flops": 100, **bad}
        with pytest.raises(InputError):
            scratch_epochs(args.pop("kind"), **args)


def test_a_shape_is_the_architecture_at_those_widths_freshly_initialised():
    parent = _model()
    small = shaped(parent, {"c1": 2, "d1": 3}, seed=5)
    widths = as_keep_set(small, {}).widths
    assert widths == {"c1": 2, "d1": 3}
    kernel = small.get_layer("c1").kernel.numpy()
    assert not np.allclose(kernel, parent.get_layer("c1").kernel.numpy()[..., :2])
    assert np.array_equal(shaped(parent, {"c1": 2, "d1": 3}, seed=5).get_weights()[0], kernel)
    with pytest.raises(InputError, match="outside"):
        shaped(parent, {"c1": 9})
    with pytest.raises(InputError, match="Unknown sites"):
        shaped(parent, {"nope": 1})


def test_scratch_keeps_the_shape_and_draws_new_weights():
    parent = _model()
    fresh = scratch(parent, seed=1)
    assert [w.shape for w in fresh.get_weights()] == [w.shape for w in parent.get_weights()]
    assert model_cost(fresh)["flops"] == model_cost(parent)["flops"]
    assert not np.allclose(fresh.get_weights()[0], parent.get_weights()[0])


def test_rewinding_gives_the_kept_units_their_early_weights():
    parent = _model()
    x = np.random.default_rng(0).random((64, 5, 5, 1), dtype=np.float32)
    y = np.arange(64) % 2
    history = fit(parent, x, y, epochs=2, learning_rate=1e-2, progress=False,
                  snapshots=[0, 1])
    assert sorted(history["snapshots"]) == [0, 1]
    early = history["snapshots"][0]
    kept = {"c1": [0, 3], "d1": [1, 2, 5]}
    small = rewound(parent, early, kept)
    assert as_keep_set(small, {}).widths == {"c1": 2, "d1": 3}
    # conv kernel: the early kernel's kept output channels
    assert np.allclose(small.get_layer("c1").kernel.numpy(), early[0][..., [0, 3]])
    assert not np.allclose(small.get_layer("c1").kernel.numpy(),
                           parent.get_layer("c1").kernel.numpy()[..., [0, 3]])
    with pytest.raises(InputError, match="do not fit"):
        rewound(parent, early[:-1], kept)
    with pytest.raises(InputError, match="unit indices"):
        rewound(parent, early, {"c1": [7]})
