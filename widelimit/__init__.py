"""widelimit: infinite-width theory of L2 regularisation, checked against finite networks.

Importing widelimit never imports neural-tangents or TensorFlow and never changes JAX's global
float64 flag (see ``widelimit._x64``).
"""
from .arch import CNN, MLP, Spec

__version__ = "0.1.0"
__all__ = ["MLP", "CNN", "Spec", "__version__"]
