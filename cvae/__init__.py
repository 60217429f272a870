"""cvae-ray: conditional-VAE next-frame prediction of a dancing figure, conditioned on pose."""

__version__ = "0.1.0"
