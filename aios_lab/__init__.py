"""aios_lab: a notebook as the control room of an AI operating system.

>>> import aios_lab as aios
>>> ds = aios.dataset("digits", "sklearn:digits")
"""
from .errors import AiosError
from .magics import load_ipython_extension

__version__ = "0.1.0"

__all__ = ["AiosError", "load_ipython_extension", "__version__"]
