"""Import-only stand-in for torchvision.models (NOT torchvision); every model raises when called."""
from .. import _unavailable

mobilenet_v2 = _unavailable("models.mobilenet_v2")
resnet50 = _unavailable("models.resnet50")
vgg16 = _unavailable("models.vgg16")
