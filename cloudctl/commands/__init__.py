"""CLI verb groups, each a thin layer over the library; registered by ``cloudctl.cli``."""
