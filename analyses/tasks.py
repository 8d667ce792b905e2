"""Tasks of graded difficulty for "is MNIST too simple?", built from MNIST and Fashion-MNIST.

    python analyses/tasks.py [--tasks all] [--seed 0]   # prints each task's fingerprint as JSON

The architecture stays the blog's network, so every task is 28x28 grayscale images in [0, 1]
with 10 classes (20 for the union); what changes is how hard the images are to tell apart:

==================  ===========================================================================
task                how it is built (training and test sets alike, seeded)
==================  ===========================================================================
``mnist``           MNIST as it is
``mnist_1k``        MNIST with 100 training images per class (1,000 in all); the test set whole
``mnist_noise``     MNIST plus Gaussian pixel noise (SD 0.35), clipped to [0, 1]
``mnist_rotated``   MNIST rotated by an angle uniform in [-60, 60] degrees (bilinear)
``mnist_clutter``   each digit over a random Fashion-MNIST image at 0.6 of its brightness,
                    the brighter of the two kept per pixel
``fashion_mnist``   Fashion-MNIST as it is
``union20``         MNIST digits (classes 0-9) and Fashion-MNIST items (classes 10-19), 30,000
                    training and 5,000 test images of each
==================  ===========================================================================

Each task is a :class:`subnet.data.Dataset` whose name is the task's; its fingerprint
(:func:`fingerprint`, a SHA-256 over the training and test arrays) goes into every result made
from it, so anyone can rebuild it with this script and check it is the same. Building is
deterministic: the seed fixes every draw.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = ("mnist", "mnist_1k", "mnist_noise", "mnist_rotated", "mnist_clutter", "fashion_mnist",
         "union20")
NOISE_SD = 0.35
MAX_DEGREES = 60.0
CLUTTER_BRIGHTNESS = 0.6


def _dataset(name, x_train, y_train, x_test, y_test, num_classes, source):
    from subnet.data import Dataset

    return Dataset(name=name, x_train=np.ascontiguousarray(x_train, np.float32),
                   y_train=np.asarray(y_train, np.int64),
                   x_test=np.ascontiguousarray(x_test, np.float32),
                   y_test=np.asarray(y_test, np.int64), num_classes=num_classes, source=source)


def _rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    angles = rng.uniform(-MAX_DEGREES, MAX_DEGREES, len(x))
    out = np.empty_like(x)
    for i, (image, angle) in enumerate(zip(x, angles, strict=True)):
        out[i, ..., 0] = ndimage.rotate(image[..., 0], angle, reshape=False, order=1,
                                        mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0)


def build(task: str, seed: int = 0, *, n_train: int | None = None, n_test: int | None = None):
    """The task's :class:`subnet.data.Dataset` (see the module docstring).

    Args:
        task: One of :data:`TASKS`.
        seed: Seeds every random draw (noise, angles, backgrounds, subsets).
        n_train, n_test: Build from the first images of each source only (quick checks); the
            task itself uses them all.

    Returns:
        The dataset; its ``source`` says how it was built.

    Raises:
        InputError: If ``task`` is unknown.
    """
    import subnet
    from subnet.errors import InputError

    if task not in TASKS:
        raise InputError(f"Unknown task {task!r}; the tasks are {list(TASKS)}.")
    rng = np.random.default_rng([seed, TASKS.index(task)])
    def load(name):
        return subnet.load_dataset(name).subset(n_train=n_train, n_test=n_test)

    if task == "fashion_mnist":
        fashion = load("fashion_mnist")
        return _dataset(task, fashion.x_train, fashion.y_train, fashion.x_test, fashion.y_test,
                        10, "Fashion-MNIST")
    mnist = load("mnist")
    x_train, y_train, x_test, y_test = mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test
    if task == "mnist":
        source = "MNIST"
    elif task == "mnist_1k":
        keep = np.concatenate([rng.choice(np.flatnonzero(y_train == c), 100, replace=False)
                               for c in range(10)])
        keep.sort()
        x_train, y_train = x_train[keep], y_train[keep]
        source = f"MNIST, 100 training images per class (seed {seed})"
    elif task == "mnist_noise":
        x_train, x_test = (np.clip(x + rng.normal(0.0, NOISE_SD, x.shape), 0.0, 1.0)
                           for x in (x_train, x_test))
        source = f"MNIST plus Gaussian noise, SD {NOISE_SD} (seed {seed})"
    elif task == "mnist_rotated":
        x_train, x_test = _rotate(x_train, rng), _rotate(x_test, rng)
        source = f"MNIST rotated uniformly in [-{MAX_DEGREES:g}, {MAX_DEGREES:g}] degrees " \
            f"(seed {seed})"
    elif task == "mnist_clutter":
        fashion = load("fashion_mnist")
        x_train = np.maximum(x_train, CLUTTER_BRIGHTNESS * fashion.x_train[
            rng.integers(0, len(fashion.x_train), len(x_train))])
        x_test = np.maximum(x_test, CLUTTER_BRIGHTNESS * fashion.x_test[
            rng.integers(0, len(fashion.x_test), len(x_test))])
        source = f"MNIST over Fashion-MNIST backgrounds at {CLUTTER_BRIGHTNESS:g} brightness " \
            f"(seed {seed})"
    else:  # union20
        fashion = load("fashion_mnist")
        half_train = min(30_000, len(x_train), len(fashion.x_train))
        half_test = min(5_000, len(x_test), len(fashion.x_test))
        parts = []
        for x, y, offset in ((x_train, y_train, 0), (fashion.x_train, fashion.y_train, 10)):
            pick = np.sort(rng.choice(len(x), half_train, replace=False))
            parts.append((x[pick], y[pick] + offset))
        tests = []
        for x, y, offset in ((x_test, y_test, 0), (fashion.x_test, fashion.y_test, 10)):
            pick = np.sort(rng.choice(len(x), half_test, replace=False))
            tests.append((x[pick], y[pick] + offset))
        order, test_order = rng.permutation(2 * half_train), rng.permutation(2 * half_test)
        x_train = np.concatenate([p[0] for p in parts])[order]
        y_train = np.concatenate([p[1] for p in parts])[order]
        x_test = np.concatenate([t[0] for t in tests])[test_order]
        y_test = np.concatenate([t[1] for t in tests])[test_order]
        return _dataset(task, x_train, y_train, x_test, y_test, 20,
                        f"MNIST (0-9) and Fashion-MNIST (10-19), 30,000 + 30,000 training and "
                        f"5,000 + 5,000 test images (seed {seed})")
    return _dataset(task, x_train, y_train, x_test, y_test, 10, source)


def fingerprint(data) -> str:
    """SHA-256 hex digest of a task's training and test images and labels (float32 and int64,
    little-endian, with their shapes)."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        array = np.ascontiguousarray(getattr(data, name),
                                     dtype="<f4" if name.startswith("x") else "<i8")
        digest.update(f"{name}{array.dtype.str}{array.shape}\n".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = TASKS if args.tasks == "all" else tuple(args.tasks.split(","))
    for name in names:
        data = build(name, args.seed)
        print(json.dumps({"task": name, "seed": args.seed, "source": data.source,
                          "n_train": len(data.x_train), "n_test": len(data.x_test),
                          "classes": data.num_classes, "fingerprint": fingerprint(data)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
