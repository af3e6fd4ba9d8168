"""CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", section 4.2).

A 3x3 stem with 16 filters, three stages of n basic blocks with 16, 32 and 64
filters (stride 2 at the first block of stages 2 and 3), global average pooling
and the classifier: depth 6n + 2, so n=3 is ResNet-20 and n=9 is ResNet-56.

Shortcuts use **option B**: where the shape changes, the shortcut is a strided
1x1 Conv2D + BatchNorm projection; elsewhere it is the identity. The paper's CIFAR
models used option A (zero-padding the extra channels), which is parameter-free
but ties a fixed half of every stage's channels to zeros and cannot be expressed
by channel-prunable layers; option B adds 2 small convolutions and keeps every
channel group prunable.
"""

from __future__ import annotations

from asp_export.models._registry import register_model

STAGE_FILTERS = (16, 32, 64)


def _basic_block(x, filters: int, strides: int, name: str):
    from keras import layers

    conv = dict(padding="same", use_bias=False, kernel_initializer="he_normal")
    y = layers.Conv2D(filters, 3, strides=strides, name=f"{name}_conv1", **conv)(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, name=f"{name}_conv2", **conv)(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters,
            1,
            strides=strides,
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{name}_shortcut",
        )(x)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    x = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(x)


def cifar_resnet(input_shape, num_classes, *, blocks_per_stage: int, name: str):
    """Build a 6n+2 CIFAR ResNet with option-B shortcuts; layer names `stage{s}_block{b}_*`."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(
        STAGE_FILTERS[0], 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem_conv"
    )(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for block in range(1, blocks_per_stage + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, strides, name=f"stage{stage}_block{block}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("resnet20", input_shape=(32, 32, 3))
def resnet20(input_shape, num_classes):
    """ResNet-20 for CIFAR (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64, option-B shortcuts."""
    return cifar_resnet(input_shape, num_classes, blocks_per_stage=3, name="resnet20")


@register_model("resnet56", input_shape=(32, 32, 3))
def resnet56(input_shape, num_classes):
    """ResNet-56 for CIFAR (He et al. 2016): 3 stages x 9 basic blocks, 16/32/64, option-B shortcuts."""
    return cifar_resnet(input_shape, num_classes, blocks_per_stage=9, name="resnet56")
