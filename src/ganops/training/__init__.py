"""Training loops (autoencoder, GAN) and what they share: device, precision, progress."""
