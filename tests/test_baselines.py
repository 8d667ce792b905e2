"""The TFMOT magnitude-pruning baseline, end to end in its child process."""

import sys

import numpy as np
import pytest

from subnet.baselines import magnitude_prune, tfmot_available
from subnet.baselines import tfmot as tfmot_module
from subnet.models import with_dropout
from tests.helpers import skip_or_fail


@pytest.fixture(autouse=True)
def _needs_tfmot():
    if not tfmot_available():
        skip_or_fail("tensorflow-model-optimization / tf-keras is not installed (subnet's "
                     "[tfmot] extra)")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv", "dense_logits", "conv_dropout_off"])
def test_magnitude_prune_reaches_the_nonzero_target(trained, mnist, name):
    # conv_dropout_off: Dropout replaced by Identity, as subnet.analyze hands models to TFMOT;
    # only layers with a kernel may be wrapped for pruning.
    model = with_dropout(trained["conv"], on=False) if name == "conv_dropout_off" else \
        trained[name]
    target = model.count_params() // 4
    pruned, info = magnitude_prune(model, mnist, nonzero=target, examples=1024, seed=0)
    assert info["nonzero_params"] == target
    assert pruned.count_params() == model.count_params()  # same shape, zeros stored
    weights = pruned.get_weights()
    assert sum(int(np.count_nonzero(w)) for w in weights) == target
    accuracy = np.mean(pruned.predict(mnist.x_test, verbose=0).argmax(-1) == mnist.y_test)
    assert accuracy > 0.2  # chance is 0.1: the pruned weights came back in the right places
    assert "tensorflow_model_optimization" not in sys.modules  # only the child imported it


def test_magnitude_prune_bad_input(trained, mnist, monkeypatch):
    model = trained["dense"]
    with pytest.raises(ValueError, match="exactly one pruning target"):
        magnitude_prune(model, mnist, examples=100)
    with pytest.raises(ValueError, match="exactly one fine-tuning budget"):
        magnitude_prune(model, mnist, sparsity=0.5)
    with pytest.raises(ValueError, match="nonzero"):
        magnitude_prune(model, mnist, nonzero=10, examples=100)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(model, mnist, sparsity=1.0, examples=100)
    monkeypatch.setattr(tfmot_module, "tfmot_available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install 'subnet\[tfmot\]'"):
        magnitude_prune(model, mnist, sparsity=0.5, examples=100)
