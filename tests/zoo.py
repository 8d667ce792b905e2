"""A zoo of small Keras classifiers of every graph shape subnet's stages must handle.

Each builder returns a fresh, uncompiled functional ``keras.Model``: channels-last, a softmax
``Dense`` classifier at the end, 770 to 17,926 parameters (MobileNetV2 at alpha 0.35: 423,018).
An eager forward pass over 64 examples takes 10-200 ms on a busy 2-core machine (MobileNetV2
about 0.25 s), mostly Keras's per-layer overhead. Weights are deterministic: every
``seed`` left unset in the model's configuration (initializers, ``Dropout``) is given one derived
from the builder's ``seed`` argument, without seeding anything globally, so two calls with the
same ``seed`` give identical weights.

The shapes, from the familiar to the hard:

- :func:`chain_cnn`: conv-pool-conv-pool-flatten-dense-dropout-dense, the chain subnet handles.
- :func:`merge_before_first_site`: two input-side paths added before the first Conv, then a chain.
- :func:`text_conv1d`: token ids through an Embedding, Conv1D, GlobalMaxPooling1D.
- :func:`resnet_identity`: residual blocks with identity shortcuts, then a 1x1 projection.
- :func:`resnet20_layout`: ResNet-20's 3 stages x 3 basic blocks, bias-free convs, projections.
- :func:`inception_block`: four parallel branches joined by a Concatenate.
- :func:`mobilenet_style`: DepthwiseConv2D (one with ``depth_multiplier=2``), SeparableConv2D.
- :func:`mobilenetv2`: ``keras.applications.MobileNetV2`` (inverted residuals, ZeroPadding2D).
- :func:`squeeze_excite`: a channel gate (GAP, Dense, Dense sigmoid, Reshape, Multiply).
- :func:`nested_model`: a Sequential model used as a layer.
- :func:`layer_norm_model`: a LayerNormalization across channels, which subnet must refuse.

BatchNormalization layers do not start as Keras's near-identity (gamma 1, beta 0, moving mean 0,
moving variance 1): each channel gets its own gamma, beta and statistics, drawn from the seed, so a
normalization sliced or folded at the wrong channels changes the output.

:data:`ZOO` maps each name to its builder; :func:`data_for` makes inputs and labels that fit a
model; :func:`quick_train` gives weights that are not the initial ones (BatchNormalization moving
statistics included) in a second or two for the small models; :func:`calibrate_batch_norm` sets
the statistics from a batch without training.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from subnet.runtime import keras

__all__ = ["ZOO", "calibrate_batch_norm", "chain_cnn", "data_for", "inception_block",
           "layer_norm_model", "merge_before_first_site", "mobilenet_style", "mobilenetv2",
           "nested_model", "quick_train", "resnet20_layout", "resnet_identity", "squeeze_excite",
           "text_conv1d"]

layers = keras.layers

# BatchNormalization momentum of the hand-built models: low, so that quick_train's few steps move
# the moving statistics visibly.
BN_MOMENTUM = 0.8


def _with_seeds(config, seed: int, counter: list[int]):
    """A copy of a layer config in which every ``"seed": None`` has become a distinct int."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "seed" and value is None:
                counter[0] += 1
                out[key] = (seed + counter[0]) & 0x7FFFFFFF
            else:
                out[key] = _with_seeds(value, seed, counter)
        return out
    if isinstance(config, list):
        return [_with_seeds(value, seed, counter) for value in config]
    return config


# What every BatchNormalization of the zoo starts from, instead of Keras's constants: gamma, beta
# and moving statistics that differ from channel to channel, so that a test slicing or folding a
# normalization at the wrong channels sees a different output.
_BN_INITIALIZERS = {
    "gamma_initializer": ("RandomUniform", {"minval": 0.5, "maxval": 1.5}),
    "beta_initializer": ("RandomUniform", {"minval": -0.5, "maxval": 0.5}),
    "moving_mean_initializer": ("RandomUniform", {"minval": -0.5, "maxval": 0.5}),
    "moving_variance_initializer": ("RandomUniform", {"minval": 0.5, "maxval": 1.5}),
}


def _seeded(model, seed: int):
    """``model`` rebuilt with every unseeded initializer and Dropout seeded from ``seed`` and the
    layer's name (a Sequential model used as a layer is seeded inside too), and its
    BatchNormalization layers given per-channel parameters and statistics
    (:data:`_BN_INITIALIZERS`).
    """

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, layers.BatchNormalization):
            config.update({key: {"module": "keras.initializers", "class_name": name,
                                 "config": {**kwargs, "seed": None}, "registered_name": None}
                           for key, (name, kwargs) in _BN_INITIALIZERS.items()})
        layer_seed = zlib.crc32(f"{seed}/{layer.name}".encode()) * 1000
        return layer.__class__.from_config(_with_seeds(config, layer_seed, [0]))

    return keras.models.clone_model(model, clone_function=clone)


def _model(inputs, outputs, name: str, seed: int):
    return _seeded(keras.Model(inputs, outputs, name=name), seed)


def _classifier(x, classes: int):
    return layers.Dense(classes, activation="softmax", name="classifier")(x)


def _conv_bn(x, filters, kernel, name, strides=1, relu=True, use_bias=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=use_bias,
                      name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def chain_cnn(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0):
    """The chain subnet has always handled: conv(4)-pool-conv(8)-pool-flatten-dense(32)-
    dropout(0.5)-dense, with ReLUs inside the layers.

    Args:
        input_shape: ``(H, W, C)``, at least 10 x 10.
        classes: Number of classes.
        seed: Seed of the weights (and of the Dropout's training noise).

    Returns:
        A ``keras.Model`` named ``"chain_cnn"``.
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="dense1")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return _model(inputs, _classifier(x, classes), "chain_cnn", seed)


def merge_before_first_site(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0):
    """Two input-side paths merged before any Conv or Dense: an AveragePooling2D of the input
    plus a MaxPooling2D of the input rescaled by 0.5 (``Add`` ``"merge"``), then the plain chain
    conv(4)-pool-conv(8)-flatten-dense(16)-dense. Every site is in a chain; only the layers
    before the first site branch.

    Args:
        input_shape: ``(H, W, C)``, at least 16 x 16.
        classes: Number of classes.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"merge_before_first_site"``.
    """
    inputs = keras.Input(input_shape)
    averaged = layers.AveragePooling2D(2, name="avg")(inputs)
    halved = layers.Rescaling(0.5, name="half")(inputs)
    maxed = layers.MaxPooling2D(2, name="max")(halved)
    x = layers.Add(name="merge")([averaged, maxed])
    x = layers.Conv2D(4, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(16, activation="relu", name="dense1")(x)
    return _model(inputs, _classifier(x, classes), "merge_before_first_site", seed)


def text_conv1d(vocab: int = 50, length: int = 20, classes: int = 4, seed: int = 0):
    """Token ids through Embedding(``vocab``, 8), Conv1D(16, 3), ReLU, Conv1D(16, 3, relu),
    GlobalMaxPooling1D, Dense(16, relu) and the classifier.

    Args:
        vocab: Vocabulary size; inputs are int32 ids in ``[0, vocab)``.
        length: Sequence length, at least 5.
        classes: Number of classes.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"text_conv1d"`` with an int32 input of shape ``(length,)``.
    """
    inputs = keras.Input((length,), dtype="int32")
    x = layers.Embedding(vocab, 8, name="embedding")(inputs)
    x = layers.Conv1D(16, 3, name="conv1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv1D(16, 3, activation="relu", name="conv2")(x)
    x = layers.GlobalMaxPooling1D(name="gmp")(x)
    x = layers.Dense(16, activation="relu", name="hidden")(x)
    return _model(inputs, _classifier(x, classes), "text_conv1d", seed)


def resnet_identity(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0):
    """Residual blocks: a stem conv(8) + BN + ReLU; two basic blocks with identity shortcuts
    (``block1_add``, ``block2_add``: the stem's 8 channels, and both blocks' second convs, are
    one group); a block of stride 2 and 16 channels whose shortcut is a 1x1 conv without BN
    (``block3_shortcut``); GlobalAveragePooling2D; the classifier. Convs have biases.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"resnet_identity"``.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, 8, 3, "stem")
    for block in (1, 2):
        y = _conv_bn(x, 8, 3, f"block{block}_conv1")
        y = _conv_bn(y, 8, 3, f"block{block}_conv2", relu=False)
        x = layers.Add(name=f"block{block}_add")([x, y])
        x = layers.ReLU(name=f"block{block}_out")(x)
    y = _conv_bn(x, 16, 3, "block3_conv1", strides=2)
    y = _conv_bn(y, 16, 3, "block3_conv2", relu=False)
    shortcut = layers.Conv2D(16, 1, strides=2, name="block3_shortcut")(x)
    x = layers.Add(name="block3_add")([shortcut, y])
    x = layers.ReLU(name="block3_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _model(inputs, _classifier(x, classes), "resnet_identity", seed)


def resnet20_layout(input_shape=(32, 32, 3), classes: int = 10, width: int = 4, seed: int = 0):
    """ResNet-20's layout (He et al. 2016, CIFAR): a stem conv(w) + BN + ReLU, 3 stages of 3 basic
    blocks with widths w, 2w, 4w, the first block of stages 2 and 3 of stride 2 with a projection
    shortcut (1x1 conv + BN, ``stage{s}_block1_shortcut``), GAP, the classifier. Convs have no
    bias (BN follows each one). 19 convs + 2 projections + 1 Dense.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        width: ``w``, the first stage's channels.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"resnet20_layout"``.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, width, 3, "stem", use_bias=False)
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in (1, 2, 3):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            y = _conv_bn(x, filters, 3, f"{name}_conv1", strides=strides, use_bias=False)
            y = _conv_bn(y, filters, 3, f"{name}_conv2", relu=False, use_bias=False)
            if strides != 1 or x.shape[-1] != filters:
                x = _conv_bn(x, filters, 1, f"{name}_shortcut", strides=strides, relu=False,
                             use_bias=False)
            x = layers.Add(name=f"{name}_add")([x, y])
            x = layers.ReLU(name=f"{name}_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _model(inputs, _classifier(x, classes), "resnet20_layout", seed)


def densenet_style(input_shape=(32, 32, 3), classes: int = 10, growth: int = 12,
                   blocks: tuple = (4, 4, 4), seed: int = 0):
    """A small DenseNet (Huang et al. 2017, the CIFAR form without bottlenecks): a stem conv of
    ``2 * growth`` channels, dense blocks of pre-activation layers (BN, ReLU, 3x3 conv of
    ``growth`` channels, concatenated to everything before it), transitions (BN, ReLU, 1x1 conv
    halving the channels, 2x2 average pooling) between blocks, then BN, ReLU, GAP, the classifier.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        growth: Channels each layer adds.
        blocks: Layers per dense block.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"densenet_style"``.
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(2 * growth, 3, padding="same", use_bias=False, name="stem")(inputs)
    for b, count in enumerate(blocks, start=1):
        for i in range(1, count + 1):
            name = f"block{b}_layer{i}"
            y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
            y = layers.ReLU(name=f"{name}_relu")(y)
            y = layers.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{name}_conv")(y)
            x = layers.Concatenate(name=f"{name}_concat")([x, y])
        if b < len(blocks):
            name = f"transition{b}"
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
            x = layers.ReLU(name=f"{name}_relu")(x)
            x = layers.Conv2D(int(x.shape[-1]) // 2, 1, use_bias=False, name=f"{name}_conv")(x)
            x = layers.AveragePooling2D(2, name=f"{name}_pool")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="final_bn")(x)
    x = layers.ReLU(name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _model(inputs, _classifier(x, classes), "densenet_style", seed)


def inception_block(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0):
    """One Inception-style block: a stem conv(8, relu) and 2x2 max pooling, then four branches
    joined by ``Concatenate`` ``"mixed"`` (18 channels: 1x1(4); 1x1(4) -> 3x3(6);
    1x1(2) -> 5x5(4); 3x3 max pool -> 1x1(4), in that order), a conv(8) reading the
    concatenation (``"after_mixed"``), GAP, the classifier.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"inception_block"``.
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)

    def conv(y, filters, kernel, name):
        return layers.Conv2D(filters, kernel, padding="same", activation="relu", name=name)(y)

    b1 = conv(x, 4, 1, "branch1x1")
    b2 = conv(conv(x, 4, 1, "branch3x3_reduce"), 6, 3, "branch3x3")
    b3 = conv(conv(x, 2, 1, "branch5x5_reduce"), 4, 5, "branch5x5")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name="branch_pool")(x)
    b4 = conv(b4, 4, 1, "branch_pool_proj")
    x = layers.Concatenate(name="mixed")([b1, b2, b3, b4])
    x = conv(x, 8, 3, "after_mixed")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _model(inputs, _classifier(x, classes), "inception_block", seed)


def mobilenet_style(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0):
    """Depthwise-separable blocks: a stem conv(8, stride 2) + BN + ReLU; DepthwiseConv2D + BN +
    ReLU + 1x1 conv(16) + BN + ReLU; a DepthwiseConv2D of stride 2 and ``depth_multiplier=2``
    (16 -> 32 channels, output channel ``2c + m`` reads input channel ``c``) + BN + ReLU + 1x1
    conv(24) + BN + ReLU; a SeparableConv2D(32, relu); GAP; the classifier. Bias-free convs
    before each BN.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"mobilenet_style"``.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, 8, 3, "stem", strides=2, use_bias=False)
    for block, (strides, multiplier, filters) in enumerate(((1, 1, 16), (2, 2, 24)), start=1):
        x = layers.DepthwiseConv2D(3, strides=strides, padding="same",
                                   depth_multiplier=multiplier, use_bias=False,
                                   name=f"block{block}_dw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{block}_dw_bn")(x)
        x = layers.ReLU(name=f"block{block}_dw_relu")(x)
        x = _conv_bn(x, filters, 1, f"block{block}_pw", use_bias=False)
    x = layers.SeparableConv2D(32, 3, padding="same", activation="relu", name="separable")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _model(inputs, _classifier(x, classes), "mobilenet_style", seed)


def mobilenetv2(input_shape=(32, 32, 3), classes: int = 10, seed: int = 0,
                calibrate: bool = True):
    """``keras.applications.MobileNetV2(weights=None, alpha=0.35)``: 423,018 parameters at
    32 x 32 x 3 and 10 classes; 35 Conv2D, 17 DepthwiseConv2D, 52 BatchNormalization, 35 ReLU
    (``max_value=6``), 10 Add, 4 ZeroPadding2D; its classifier is the Dense ``"predictions"``.
    Built offline (no weights are downloaded); BatchNormalization momentum is Keras's 0.999.

    Freshly initialized, its activations shrink block after block (to about 1e-11 before the
    classifier), so that every input gets the same probabilities, 0.1 each to float32 precision.
    ``calibrate`` (the default) sets its BatchNormalization statistics from
    ``data_for(model, 64, seed)`` (:func:`calibrate_batch_norm`), after which the outputs depend
    on the input.

    Args:
        input_shape: ``(H, W, 3)``, at least 32 x 32.
        classes: Number of classes.
        seed: Seed of the weights (and of the calibration inputs).
        calibrate: Whether to calibrate the BatchNormalization statistics.

    Returns:
        A ``keras.Model`` named ``"mobilenetv2_0.35_32"`` (for 32 x 32 inputs).
    """
    model = keras.applications.MobileNetV2(input_shape=input_shape, alpha=0.35, weights=None,
                                           classes=classes)
    model = _seeded(model, seed)
    if calibrate:
        calibrate_batch_norm(model, data_for(model, 64, seed)[0])
    return model


def squeeze_excite(input_shape=(28, 28, 1), classes: int = 10, reduction: int = 4,
                   seed: int = 0):
    """A conv block with a squeeze-and-excitation gate: conv(16, stride 2, relu), conv(16, relu)
    (``"conv2"``); the gate GAP (``"se_squeeze"``) -> Dense(16 // reduction, relu)
    (``"se_reduce"``) -> Dense(16, sigmoid) (``"se_expand"``) -> Reshape(1, 1, 16) -> Multiply
    with conv2's output (``"se_scale"``); then GAP and the classifier. ``conv2``'s channel ``c``
    and ``se_expand``'s unit ``c`` are multiplied together.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        reduction: Squeeze ratio of the gate.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"squeeze_excite"``.
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    s = layers.GlobalAveragePooling2D(name="se_squeeze")(x)
    s = layers.Dense(16 // reduction, activation="relu", name="se_reduce")(s)
    s = layers.Dense(16, activation="sigmoid", name="se_expand")(s)
    s = layers.Reshape((1, 1, 16), name="se_reshape")(s)
    x = layers.Multiply(name="se_scale")([x, s])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _model(inputs, _classifier(x, classes), "squeeze_excite", seed)


def nested_model(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0):
    """A functional model with a Sequential model as a layer: ``"features"`` (conv(8, relu) ->
    2x2 max pooling -> conv(8, relu)), then GAP, Dense(16, relu) and the classifier.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        seed: Seed of the weights (inside the Sequential model too).

    Returns:
        A ``keras.Model`` named ``"nested_model"``.
    """
    features = keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(8, 3, activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(8, 3, activation="relu", name="conv2"),
    ], name="features")
    inputs = keras.Input(input_shape)
    x = features(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(16, activation="relu", name="dense1")(x)
    return _model(inputs, _classifier(x, classes), "nested_model", seed)


def layer_norm_model(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0):
    """conv(8) -> LayerNormalization over the channel axis (``"ln"``: dropping one channel
    changes every other channel's value) -> ReLU -> conv(8, relu) -> GAP -> the classifier.
    subnet must refuse it: no channel mask of ``conv1`` can be applied exactly.

    Args:
        input_shape: ``(H, W, C)``.
        classes: Number of classes.
        seed: Seed of the weights.

    Returns:
        A ``keras.Model`` named ``"layer_norm_model"``.
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(8, 3, name="conv1")(inputs)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _model(inputs, _classifier(x, classes), "layer_norm_model", seed)


ZOO: dict[str, Callable[..., keras.Model]] = {
    builder.__name__: builder
    for builder in (chain_cnn, merge_before_first_site, text_conv1d, resnet_identity,
                    resnet20_layout, inception_block, mobilenet_style, mobilenetv2,
                    squeeze_excite, nested_model, layer_norm_model)
}


def data_for(model, n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs and labels that fit ``model``.

    Args:
        model: A ``keras.Model`` with one input of fixed shape and one output ``(None, K)``.
        n: Number of examples.
        seed: Seed of the draw.

    Returns:
        ``(x, y)``: ``x`` of shape ``(n, *input shape)``, float32 uniform in [0, 1), or for an
        integer input int32 token ids uniform in ``[0, vocab)`` (``vocab``: the ``input_dim`` of
        the model's first Embedding layer); ``y`` int64 labels uniform in ``[0, K)``, shape
        ``(n,)``.

    Raises:
        ValueError: If the model has several inputs or outputs, an input of unknown shape, or
            an integer input and no Embedding layer.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"data_for needs a model with one input and one output. Received: "
                         f"{model.name!r} with {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs")
    spec = model.inputs[0]
    shape = tuple(spec.shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"data_for needs an input of fixed shape. Received: {model.name!r} "
                         f"with input shape {tuple(spec.shape)}")
    classes = model.outputs[0].shape[-1]
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(spec.dtype), np.integer):
        vocab = next((layer.input_dim for layer in model.layers
                      if isinstance(layer, layers.Embedding)), None)
        if vocab is None:
            raise ValueError(f"data_for cannot tell the range of {model.name!r}'s integer input "
                             f"({spec.dtype}): the model has no Embedding layer")
        x = rng.integers(0, vocab, size=(n, *shape), dtype=np.int32)
    else:
        x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, classes, size=n, dtype=np.int64)
    return x, y


def quick_train(model, x, y, epochs: int = 1, batch_size: int = 16):
    """Fits ``model`` on ``(x, y)`` silently: Adam (learning rate 1e-3), sparse categorical
    cross-entropy, batches in order (no shuffling), eagerly (for the few steps it is meant for,
    tracing a graph would take longer than the steps). Enough steps for non-initial weights and
    BatchNormalization moving statistics, not for accuracy. With seeded Dropout layers, as the
    zoo's are, two fits of the same model on the same data give the same weights.

    Args:
        model: A zoo model (softmax outputs, integer labels).
        x: Inputs, as :func:`data_for` makes them.
        y: Integer labels, shape ``(N,)``.
        epochs: Passes over the data.
        batch_size: Examples per step.

    Returns:
        The ``keras.callbacks.History`` of the fit; ``model`` is trained in place and compiled.
    """
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True)
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0)


def _batch_norms(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _batch_norms(layer)
        elif isinstance(layer, layers.BatchNormalization):
            yield layer


def calibrate_batch_norm(model, x):
    """Sets every BatchNormalization layer's moving mean and variance to the mean and (biased)
    variance of its input over ``x``, in one forward pass in training mode (momentum 0 for that
    pass, restored after). Nothing else changes, so afterwards ``model(x, training=False)``
    equals ``model(x, training=True)`` for a model without Dropout.

    Args:
        model: A ``keras.Model`` (nested models' BatchNormalization layers included).
        x: One batch of inputs, as :func:`data_for` makes them.

    Returns:
        ``model``, calibrated in place.
    """
    norms = list(_batch_norms(model))
    momenta = [layer.momentum for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0
        model(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return model
