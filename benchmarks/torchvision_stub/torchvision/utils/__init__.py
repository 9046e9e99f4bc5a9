"""Import-only stand-in for torchvision.utils (NOT torchvision); make_grid raises when called."""
from .. import _unavailable

make_grid = _unavailable("utils.make_grid")
