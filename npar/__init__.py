"""npar: hand-written convolutional autoregressive models in NumPy and Numba.

PixelCNN (van den Oord et al. 2016a), Gated PixelCNN (van den Oord et al.
2016b) and WaveNet (van den Oord et al. 2016c), with every forward and
backward pass written out by hand and compiled with Numba.

Shape letters used in every docstring of the package:

==========  ==============================================================
letter      meaning
==========  ==============================================================
N           batch size
C           channels (``C_in``, ``C_out`` for the two sides of a layer)
H, W        image height and width
T           number of time steps (audio samples)
K           kernel size (``K_h``, ``K_w`` for the two axes of a 2-D kernel)
D           dilation
V           number of discrete levels of one value (256 for 8-bit pixels
            and for mu-law codes)
==========  ==============================================================

Conventions: images are ``(N, C, H, W)``, audio is ``(N, C, T)``,
convolution weights are ``(C_out, C_in, K_h, K_w)`` (``(C_out, C_in, K)``
in 1-D), and "convolution" means cross-correlation, as in PyTorch and ONNX.
"""

from npar._version import __version__
from npar.backend import get_backend, set_backend
from npar.models.io import load, save
from npar.verify.gradcheck import gradcheck

__all__ = ["__version__", "get_backend", "gradcheck", "load", "save", "set_backend"]
