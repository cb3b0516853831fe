"""moaa: alignment data (SFT and DPO) manufactured with Mixture-of-Agents."""

__version__ = "0.1.0"
