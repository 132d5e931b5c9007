"""Models: PixelCNN, Gated PixelCNN and WaveNet."""

from npar.models.io import load, model_class, save
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN

__all__ = ["GatedPixelCNN", "PixelCNN", "load", "model_class", "save"]
