"""tfpipe: fine-tune pretrained image classifiers with TensorFlow, with an input
pipeline that is never the bottleneck.

Importing tfpipe registers its Keras layers and model class, so models it saved
load with keras.models.load_model.
"""

__version__ = "0.1.0"

from tfpipe.models import backbones as _backbones  # noqa: E402,F401  (registers custom Keras objects)
from tfpipe.models import classifier as _model  # noqa: E402,F401  (registers custom Keras objects)
