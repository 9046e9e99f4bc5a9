"""Import-only stand-in for torchvision (NOT torchvision); see ../../README.md.

Only exists so that `import atomai` succeeds; nothing on AtomAI's dklGPR path calls torchvision.
"""
__version__ = "0.0.0+dkl4dstem.import-stub"
IS_DKL4DSTEM_STUB = True


def _unavailable(name):
    def fn(*args, **kwargs):
        raise RuntimeError(f"torchvision.{name} called, but this is dkl4dstem's import-only torchvision stand-in")
    fn.__name__ = name.rsplit(".", 1)[-1]
    return fn


from . import models, utils  # noqa: E402,F401
