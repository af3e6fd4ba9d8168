"""Preprocessing shared by every pipeline: stored pixels -> the model's input, CIFAR augmentation.

All functions are TensorFlow ops that work on whole batches inside tf.data (and eagerly for
`Dataset.sample`). TensorFlow is imported inside each function so the package stays light.
"""

from __future__ import annotations


def to_model_input(
    x, scale: float, input_shape: tuple[int, int, int], input_range: str = "0-1", offset: float = 0.0
):
    """[B, h, w, c] stored pixels -> float32 [B, H, W, C] in the model's input range.

    `stored * scale + offset` is the pixel in [0, 1]; `input_range` (asp_export.input_range) maps
    [0, 1] to what the model expects. Both happen in one multiply-add, so uint8 pixels reach a
    0-255 model exactly (1/255 * 255 is 1.0 in float64) and floats already in range pass unchanged.
    """
    import tensorflow as tf

    from asp_export.input_range import affine

    multiplier, low = affine(input_range)
    x = tf.cast(x, tf.float32) * (scale * multiplier)
    if offset * multiplier + low:
        x = x + (offset * multiplier + low)
    height, width, channels = input_shape
    have = x.shape[-1]
    if have == 1 and channels == 3:
        x = tf.repeat(x, 3, axis=-1)  # gray -> RGB by repeating the plane
    elif have == 3 and channels == 1:
        x = tf.image.rgb_to_grayscale(x)  # ITU-R 601 luminance
    if x.shape[1] != height or x.shape[2] != width:
        # antialias only matters when shrinking; it keeps downsampled images faithful
        x = tf.image.resize(x, (height, width), method="bilinear", antialias=True)
    return x


def augment_batch(x, seed):
    """CIFAR augmentation on a stored batch: zero-pad 4 px, random crop back, random h-flip."""
    import tensorflow as tf

    batch = tf.shape(x)[0]
    height, width = x.shape[1], x.shape[2]
    pad = 4
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, 3)
    dy = tf.random.stateless_uniform([batch], seeds[0], 0, 2 * pad + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([batch], seeds[1], 0, 2 * pad + 1, dtype=tf.int32)
    rows = dy[:, None] + tf.range(height)[None, :]
    cols = dx[:, None] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)


def decode_file(path, native_shape: tuple[int, int, int]):
    """Read one image file -> uint8 [h, w, C_native] (first frame of a GIF, alpha dropped)."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    if native_shape[2] == 1:
        image = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
    return image
