"""llmsparse: one-shot compression of Hugging Face causal LMs.

``llmsparse.load(path)`` loads anything the tool writes or reads; the CLI is ``llmsparse``.
"""
__version__ = "0.1.0"


def load(*args, **kwargs):
    from .api import load as _load

    return _load(*args, **kwargs)
