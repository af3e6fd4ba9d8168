"""Tiny test networks, one per topology the graph and surgery code must handle.

Each has fewer than 50k parameters, a default input of 16x16x3 and explicit layer
names, so tests across the project (surgery, export, bench) can refer to layers by
name and run in seconds on a CPU. They are registered in the shared zoo under
`tiny_*` names and hidden from `asp models` unless `--all` is given.

| name            | topology it exercises                                             |
| --------------- | ----------------------------------------------------------------- |
| tiny_cnn        | plain Conv2D + BN + pooling + Flatten -> Dense                    |
| tiny_resnet     | residual Add, identity and 1x1-conv projection shortcuts          |
| tiny_mobilenet  | inverted residual: expand 1x1, DepthwiseConv2D, project, Add      |
| tiny_concat     | Concatenate of two conv branches along channels                   |
| tiny_separable  | SeparableConv2D chain                                             |
| tiny_se         | squeeze-and-excitation gate (GAP -> Dense -> sigmoid -> Multiply) |
"""

from __future__ import annotations

from asp_export.models._registry import register_model
from asp_export.models.mobilenetv2 import inverted_residual

_TINY_INPUT = (16, 16, 3)


def _conv_bn_relu(x, filters: int, name: str, *, kernel_size: int = 3, strides: int = 1):
    """Conv2D (no bias) -> BN -> ReLU, with layers named `<name>`, `<name>_bn`, `<name>_relu`."""
    from keras import layers

    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@register_model("tiny_cnn", input_shape=_TINY_INPUT)
def tiny_cnn(input_shape, num_classes):
    """Plain CNN: conv+BN+pool twice, Flatten, Dense 32, logits (test model)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)  # with bias, followed by BN
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv_bn_relu(x, 16, "conv2")
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.1, name="drop1")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


@register_model("tiny_resnet", input_shape=_TINY_INPUT)
def tiny_resnet(input_shape, num_classes):
    """Two residual blocks: identity shortcut, then stride-2 1x1-conv+BN projection (test model)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn_relu(inputs, 8, "stem")
    # Block 1: identity shortcut, so stem and block1_conv2 share one channel group.
    y = _conv_bn_relu(x, 8, "block1_conv1")
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="block1_conv2")(y)
    y = layers.BatchNormalization(name="block1_conv2_bn")(y)
    x = layers.Add(name="block1_add")([x, y])
    x = layers.ReLU(name="block1_out")(x)
    # Block 2: stride 2 and 8 -> 16 channels, projection shortcut.
    y = _conv_bn_relu(x, 16, "block2_conv1", strides=2)
    y = layers.Conv2D(16, 3, padding="same", use_bias=False, name="block2_conv2")(y)
    y = layers.BatchNormalization(name="block2_conv2_bn")(y)
    s = layers.Conv2D(16, 1, strides=2, use_bias=False, name="block2_shortcut")(x)
    s = layers.BatchNormalization(name="block2_shortcut_bn")(s)
    x = layers.Add(name="block2_add")([s, y])
    x = layers.ReLU(name="block2_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_resnet")


@register_model("tiny_mobilenet", input_shape=_TINY_INPUT)
def tiny_mobilenet(input_shape, num_classes):
    """Two inverted residual blocks (one with Add), depthwise convs, 1x1 head (test model)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    x = inverted_residual(x, expansion=4, out_ch=8, strides=1, name="block1")
    x = inverted_residual(x, expansion=4, out_ch=16, strides=2, name="block2")
    x = layers.Conv2D(32, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_mobilenet")


@register_model("tiny_concat", input_shape=_TINY_INPUT)
def tiny_concat(input_shape, num_classes):
    """Two conv branches (1x1 with 8, 3x3 with 4 filters) concatenated to 12 channels (test model)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn_relu(inputs, 8, "stem")
    a = layers.Conv2D(8, 1, activation="relu", name="branch_a")(x)
    b = layers.Conv2D(4, 3, padding="same", activation="relu", name="branch_b")(x)
    x = layers.Concatenate(axis=-1, name="concat")([a, b])
    x = layers.BatchNormalization(name="concat_bn")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = _conv_bn_relu(x, 16, "conv_after")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_concat")


@register_model("tiny_separable", input_shape=_TINY_INPUT)
def tiny_separable(input_shape, num_classes):
    """Conv stem then two SeparableConv2D layers (with BN between) (test model)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn_relu(inputs, 8, "stem")
    x = layers.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep1")(x)
    x = layers.BatchNormalization(name="sep1_bn")(x)
    x = layers.ReLU(name="sep1_relu")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.SeparableConv2D(32, 3, padding="same", activation="relu", name="sep2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_separable")


@register_model("tiny_se", input_shape=_TINY_INPUT)
def tiny_se(input_shape, num_classes):
    """Conv with a squeeze-and-excitation gate (broadcast Multiply), then conv and GAP (test model)."""
    import keras
    from keras import layers

    channels = 16
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn_relu(inputs, channels, "stem")
    s = layers.GlobalAveragePooling2D(name="se_squeeze")(x)
    s = layers.Dense(channels // 4, activation="relu", name="se_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", name="se_expand")(s)
    s = layers.Reshape((1, 1, channels), name="se_reshape")(s)
    x = layers.Multiply(name="se_scale")([x, s])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = _conv_bn_relu(x, 24, "conv2")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_se")
