"""Fixtures shared by several test modules."""

import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def keras2_dir(tmp_path_factory):
    """Keras 2 (tf_keras) .h5 files built the blog's ways, made in a child process."""
    pytest.importorskip("tf_keras", reason="tf_keras is installed with subnet's [tfmot] extra")
    out = tmp_path_factory.mktemp("keras2")
    subprocess.run([sys.executable, str(FIXTURES / "make_keras2_models.py"), str(out)],
                   check=True, capture_output=True, timeout=300)
    return out
