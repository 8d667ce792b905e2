"""Baselines subnet compares its subnetworks with. Only :mod:`subnet.baselines.tfmot` knows TFMOT
exists, and it runs TFMOT in a child process."""

from subnet.baselines.tfmot import magnitude_prune, tfmot_available

__all__ = ["magnitude_prune", "tfmot_available"]
