"""Sampling: decoding strategies, cached PixelCNN generation, sample pictures.

- :mod:`npar.sampling.strategies`: greedy, temperature, top-k, top-p and
  beam search, shared by every model and the command line;
- :mod:`npar.sampling.pixelcnn`: naive and cached PixelCNN generation;
- :mod:`npar.sampling.images`: PNG grids and raster-order growth strips.
"""
