"""The model zoo: `@register_model` functions that return Keras functional models.

from asp_export.models import create_model, list_models
model = create_model("lenet5", input_shape=(28, 28, 1), num_classes=10)
"""

# Importing the families registers their models.
from asp_export.models import mnist as _mnist  # noqa: F401,E402
from asp_export.models import mobilenetv2 as _mobilenetv2  # noqa: F401,E402
from asp_export.models import resnet as _resnet  # noqa: F401,E402
from asp_export.models import tiny as _tiny  # noqa: F401,E402
from asp_export.models import vgg as _vgg  # noqa: F401,E402
from asp_export.models._registry import create_model, get_model_entry, list_models, register_model

__all__ = ["create_model", "get_model_entry", "list_models", "register_model"]
