"""cloudctl: bare-metal racks to a Talos + Flux private cloud from one inventory."""

__version__ = "0.1.0"
