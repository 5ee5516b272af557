"""Networks: DCGAN generator and discriminator, and the autoencoder that pretrains both.

Import from the modules, not the package: a stage depends on (and DVC reruns it for) only the files it imports.

    generator.py      Generator, build_generator(cfg, image_size, channels, num_classes);
                      save_generator / load_generator (the generator file the train stage writes)
    discriminator.py  Discriminator, build_discriminator(cfg, image_size, channels, num_classes)
    autoencoder.py    Autoencoder, build_autoencoder; load_autoencoder_into_generator / _discriminator
                      ("decoder.*" -> G, "encoder.trunk.*" -> D.trunk); save_autoencoder / load_autoencoder
    blocks.py         layers both share (ConvTrunk, up/down blocks, spectral norm, init) and size_plan
    latent.py         sample_latent
    seeded_samples.py seeded latents and labels for (n, seed), and a loaded G's images for them
"""
