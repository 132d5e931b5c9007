"""Data: MNIST (IDX files) and speech audio (WAV, mu-law)."""
