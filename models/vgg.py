"""VGG-16 with batch normalisation, in the form commonly trained on CIFAR-10/100.

Thirteen 3x3 convolutions (each Conv2D without bias -> BatchNorm -> ReLU) in five
stages separated by 2x2 max-pooling, then one fully connected layer of 512 units
(+ BatchNorm + ReLU) and the classifier. At 32x32 the last pooling leaves 1x1x512,
so the classifier head is small, unlike ImageNet VGG-16's two 4096-unit layers.
"""

from __future__ import annotations

from asp_export.models._registry import register_model

# Filters per conv, "M" = 2x2 max-pool (Simonyan & Zisserman configuration "D").
# fmt: off
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
# fmt: on


def _vgg(cfg, input_shape, num_classes, *, fc_units: int, name: str):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    conv_index, pool_index = 0, 0
    for item in cfg:
        if item == "M":
            pool_index += 1
            x = layers.MaxPooling2D(2, name=f"pool{pool_index}")(x)
            continue
        conv_index += 1
        conv = f"conv{conv_index}"
        x = layers.Conv2D(
            int(item), 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=conv
        )(x)
        x = layers.BatchNormalization(name=f"{conv}_bn")(x)
        x = layers.ReLU(name=f"{conv}_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(fc_units, use_bias=False, name="fc1")(x)
    x = layers.BatchNormalization(name="fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("vgg16-cifar", input_shape=(32, 32, 3))
def vgg16_cifar(input_shape, num_classes):
    """VGG-16 with BN (13 convs, 64..512), fc512+BN+ReLU, classes; the usual CIFAR variant."""
    return _vgg(VGG16_CFG, input_shape, num_classes, fc_units=512, name="vgg16_cifar")
