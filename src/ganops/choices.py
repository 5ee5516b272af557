"""The fixed vocabularies params.yaml may name, each defined once; config validates them on load and the
modules that implement them import them from here.

Torch-free and import-free on purpose: every stage loads config, so whatever config imports becomes a
DVC dependency of every stage. The lists that grow by contribution live with their implementation
instead, and the stage that uses them checks them on load (`load_section(..., choices=...)`):
GAN losses in `ganops.losses.GAN_LOSSES`, metric kinds in `ganops.metrics.names.KINDS`, data
sources in `ganops.data.sources.SOURCES`.
"""

IMAGE_SIZES = (28, 32, 64)  # what the networks' size plans cover (models/blocks.py, metrics/judge.py)
CHANNELS = (1, 3)  # grayscale or RGB
LATENT_DISTS = ("normal", "uniform")  # models/latent.sample_latent
UPSAMPLES = ("convt", "nearest")  # models/blocks.up_block: transposed conv, or nearest 2× then conv
DIFFAUG_OPS = ("color", "translation", "cutout")  # training/diffaugment.py, comma-joined in train.diffaugment
