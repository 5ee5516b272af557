"""Image-quality metrics on the standard FID network (TF-Inception pool3, offline).

Import from the modules, not the package: a stage depends on (and DVC reruns it for) only the files it imports.

    inception.py  locate/load the network, preprocess uint8 images, extract (N, 2048) features
    fid.py              FeatureStats (moments + file format), frechet_distance
    kernel_distance.py  kid (KID's unbiased MMD^2)
    manifold.py         precision_recall (improved precision/recall)
    registry.py         protocol-named metrics (fid10k, kid10k, pr10k, ...): each kind registered once,
                        with its function and what its protocol records
    judge.py, pixel.py  the class-conditional judge and the pixel-space FID (training-time scores)
"""
