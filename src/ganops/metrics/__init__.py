"""Image-quality metrics on the standard FID network (TF-Inception pool3, offline).

Import from the modules, not the package: a stage depends on (and DVC reruns it for) only the files it imports.

    names.py            MetricName (kind + N: fid10k, kid2500) and the kinds; torch-free, the one naming rule
    inception.py        locate/load the network, preprocess uint8 images, extract (N, 2048) features (with progress)
    fid.py              FeatureStats (moments + file format), frechet_distance
    reference.py        reference statistics of real images (the test split), what every metric is measured against
    kernel_distance.py  kid (KID's unbiased MMD^2)
    manifold.py         precision_recall (improved precision/recall)
    registry.py         the metric implementations: each kind of names.KINDS registered once, with its function and
                        what its protocol records; compute_metrics
    floor.py            the real-data floor (training images vs the reference)
    evaluation.py       a generator's samples: metrics, floor ratio, the judge's report
    precomputed.py      reference statistics and floors committed to stats/shipped/, reused when their key matches
    judge.py, pixel.py  the class-conditional judge and the pixel-space FID (training-time scores)
"""
