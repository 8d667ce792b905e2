"""subnet: do equally good subnetworks exist inside a trained network?"""

__version__ = "0.1.0"
