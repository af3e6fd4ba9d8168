"""asp: prune Keras CNNs with attention-guided group sparsity and ship them smaller.

The package root imports nothing heavy: `asp bench` on ONNX or TFLite files must
run where TensorFlow is not installed. Import the stage modules directly:
`asp_export.prune.sparsity`, `asp_export.surgery`, `asp_export.surgery.flops`, `asp_export.export`, ...
"""

from asp_export.errors import AspError
from asp_export.versions import asp_version

__version__ = asp_version()
__all__ = ["AspError", "__version__"]
