"""Networks: DCGAN generator and discriminator, and the autoencoder that pretrains both.

    G = build_generator(cfg, image_size, channels, num_classes)
    D = build_discriminator(cfg, image_size, channels, num_classes)
    ae = build_autoencoder(cfg, image_size, channels, variational=False)
    load_autoencoder_into_generator(G, ae.state_dict())      # "decoder.*"       -> G
    load_autoencoder_into_discriminator(D, ae.state_dict())  # "encoder.trunk.*" -> D.trunk
"""

from ganops.models.autoencoder import (
    DECODER_PREFIX,
    ENCODER_TRUNK_PREFIX,
    AEOutput,
    Autoencoder,
    Encoder,
    build_autoencoder,
    build_discriminator,
    build_generator,
    load_autoencoder_into_discriminator,
    load_autoencoder_into_generator,
)
from ganops.models.blocks import ConvTrunk, apply_spectral_norm, init_weights, size_plan
from ganops.models.discriminator import Discriminator
from ganops.models.generator import Generator
from ganops.models.latent import sample_latent

__all__ = [
    "AEOutput", "Autoencoder", "ConvTrunk", "DECODER_PREFIX", "Discriminator", "ENCODER_TRUNK_PREFIX",
    "Encoder", "Generator", "apply_spectral_norm", "build_autoencoder",
    "build_discriminator", "build_generator", "init_weights", "load_autoencoder_into_discriminator",
    "load_autoencoder_into_generator", "sample_latent", "size_plan",
]
