"""MobileNetV2 (Sandler et al. 2018) with the stride schedule commonly used for 32x32 CIFAR images.

The ImageNet network downsamples 32x; on 32x32 inputs that leaves 1x1 maps before
the head. The CIFAR variant (as in kuangliu/pytorch-cifar) uses stride 1 in the
stem and in the second stage (24 channels), so the resolution goes 32 -> 16 -> 8 -> 4
(strides at the 32-, 64- and 160-channel stages). Blocks are inverted residuals:
expand 1x1 Conv+BN+ReLU6 (skipped when the expansion is 1), 3x3 DepthwiseConv+BN+ReLU6,
project 1x1 Conv+BN (linear), and an Add when stride is 1 and channels match.
"""

from __future__ import annotations

from asp_export.models._registry import register_model

# (expansion t, output channels c, repeats n, stride of the first block s); strides adapted for 32x32.
CIFAR_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet network
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 without going below 90 % of the target (the paper's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def inverted_residual(x, expansion: int, out_ch: int, strides: int, name: str):
    """MobileNetV2 block: expand 1x1 -> depthwise 3x3 -> project 1x1 (+ Add when shapes match)."""
    from keras import layers

    in_ch = int(x.shape[-1])
    y = x
    if expansion != 1:
        y = layers.Conv2D(in_ch * expansion, 1, use_bias=False, name=f"{name}_expand")(y)
        y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if strides == 1 and in_ch == out_ch:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenetv2_cifar_model(
    input_shape, num_classes, *, width_multiplier: float = 1.0, name: str = "mobilenetv2"
):
    """Build MobileNetV2 for small images; layer names `stem`, `block{i}_*`, `head`, `gap`, `logits`."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    stem_ch = _make_divisible(32 * width_multiplier)
    x = layers.Conv2D(stem_ch, 3, strides=1, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    index = 0
    for expansion, channels, repeats, first_stride in CIFAR_BLOCKS:
        out_ch = _make_divisible(channels * width_multiplier)
        for repeat in range(repeats):
            x = inverted_residual(
                x, expansion, out_ch, first_stride if repeat == 0 else 1, name=f"block{index}"
            )
            index += 1
    # As in the paper, the head is not thinned below 1280 channels when width_multiplier < 1.
    head_ch = _make_divisible(1280 * width_multiplier) if width_multiplier > 1.0 else 1280
    x = layers.Conv2D(head_ch, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("mobilenetv2-cifar", input_shape=(32, 32, 3))
def mobilenetv2_cifar(input_shape, num_classes):
    """MobileNetV2 (width 1.0) with CIFAR strides: stem stride 1, 32->16->8->4, 1280-ch head."""
    return mobilenetv2_cifar_model(input_shape, num_classes, width_multiplier=1.0, name="mobilenetv2_cifar")
