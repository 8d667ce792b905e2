"""Fixtures shared by several test modules.

Tests that use the ``trained`` fixture (five networks trained on an MNIST slice) are marked
``slow`` here, so that ``pytest -m "not slow"`` (``make test-fast``) trains nothing.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import subnet
from subnet.models import seed_cnn
from subnet.train import fit
from tests.helpers import conv1d_model, conv_bn_model, dense_only_model, skip_or_fail

FIXTURES = Path(__file__).parent / "fixtures"
# Fixtures that train networks: a test that uses one (directly or through another fixture) is
# slow.
TRAINING_FIXTURES = frozenset({"trained"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def keras2_dir(tmp_path_factory):
    """Keras 2 (tf_keras) .h5 files built the blog's ways, made in a child process."""
    if importlib.util.find_spec("tf_keras") is None:
        skip_or_fail("tf_keras is not installed (it comes with subnet's [tfmot] extra)")
    out = tmp_path_factory.mktemp("keras2")
    subprocess.run([sys.executable, str(FIXTURES / "make_keras2_models.py"), str(out)],
                   check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def mnist():
    try:
        data = subnet.load_dataset("mnist")
    except ValueError as err:
        skip_or_fail(f"MNIST is not available here: {err}")
    return data.subset(n_train=3000, n_test=96)


@pytest.fixture(scope="session")
def trained(mnist):
    """Small real networks of every supported shape, trained briefly on an MNIST slice."""
    models = {
        "dense": dense_only_model(),
        "dense_logits": dense_only_model(logits=True),
        "conv": seed_cnn(16, conv_filters=(4, 6), seed=1),
        "conv_bn": conv_bn_model(),
        "conv1d": conv1d_model(),
    }
    for model in models.values():
        fit(model, mnist.x_train, mnist.y_train, epochs=8,
            learning_rate=3e-3, progress=False, seed=0)
    return models

