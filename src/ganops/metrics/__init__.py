"""Image-quality metrics on the standard FID network (TF-Inception pool3, offline).

    inception.py  locate/load the network, preprocess uint8 images, extract (N, 2048) features
    fid.py              FeatureStats (moments + file format), frechet_distance
    kernel_distance.py  kid (KID's unbiased MMD^2)
    manifold.py         precision_recall (improved precision/recall)
    registry.py         protocol-named metrics (fid10k, kid10k, pr10k, ...): each kind registered once,
                        with its function and what its protocol records
    judge.py, pixel.py  the class-conditional judge and the pixel-space FID (training-time scores)
"""

from ganops.metrics.fid import FeatureStats, frechet_distance
from ganops.metrics.inception import NETWORK, RESIZE, extract_features, load_network, preprocess, protocol
from ganops.metrics.kernel_distance import kid
from ganops.metrics.manifold import precision_recall
from ganops.metrics.registry import (
    compute_metrics,
    flatten,
    list_metrics,
    metric_name,
    parse_metric_name,
    reference_stats,
    register_metric,
)

__all__ = [
    "NETWORK", "RESIZE", "FeatureStats", "compute_metrics", "extract_features", "flatten", "frechet_distance",
    "kid", "list_metrics", "load_network", "metric_name", "parse_metric_name", "precision_recall", "preprocess",
    "protocol", "reference_stats", "register_metric",
]
