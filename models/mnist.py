"""MNIST-sized networks: the GASL paper's net, Caffe LeNet-5 and LeNet-300-100."""

from __future__ import annotations

from asp_export.models._registry import register_model


def _paper_init():
    import keras

    # The authors' code: truncated normal (stddev 0.1) weights, constant 0.1 biases.
    return {
        "kernel_initializer": keras.initializers.TruncatedNormal(stddev=0.1),
        "bias_initializer": keras.initializers.Constant(0.1),
    }


@register_model("gasl-mnist", input_shape=(28, 28, 1))
def gasl_mnist(input_shape, num_classes):
    """GASL paper net: conv5x5x64, pool, conv5x5x128, pool, fc512, fc256 (dropout 0.2), classes."""
    import keras
    from keras import layers

    init = _paper_init()
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(64, 5, padding="same", activation="relu", name="conv1", **init)(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(128, 5, padding="same", activation="relu", name="conv2", **init)(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc1", **init)(x)
    x = layers.Dropout(0.2, name="drop1")(x)
    x = layers.Dense(256, activation="relu", name="fc2", **init)(x)
    x = layers.Dropout(0.2, name="drop2")(x)
    outputs = layers.Dense(num_classes, name="logits", **init)(x)
    return keras.Model(inputs, outputs, name="gasl_mnist")


@register_model("lenet5", input_shape=(28, 28, 1))
def lenet5(input_shape, num_classes):
    """Caffe LeNet-5 (20-50-500): conv5x5x20, pool, conv5x5x50, pool, fc500 relu, classes."""
    import keras
    from keras import layers

    # As in Caffe's examples/mnist/lenet.prototxt: valid convolutions with no activation after
    # them (the only nonlinearity is the ReLU after fc 500), Xavier (Glorot) initialisation.
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(20, 5, padding="valid", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, padding="valid", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5")


@register_model("lenet-300-100", input_shape=(28, 28, 1))
def lenet_300_100(input_shape, num_classes):
    """LeNet-300-100 MLP: flatten, fc300 relu, fc100 relu, classes."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(300, activation="relu", name="fc1")(x)
    x = layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")
