"""Ships the top-level data directories inside the wheel as cloudctl/_data/<name>/."""

from setuptools import find_packages, setup

DATA_DIRS = {
    "cloudctl._data.templates": "templates",
    "cloudctl._data.talos": "talos",
    "cloudctl._data.flux": "flux",
    "cloudctl._data.helm_values": "helm-values",
}

setup(
    packages=find_packages(include=["cloudctl", "cloudctl.*"]) + list(DATA_DIRS),
    package_dir=DATA_DIRS,
    package_data={
        "cloudctl": ["py.typed"],
        "cloudctl.talos.proto": ["*.pyi", "*.proto", "NOTICE"],
        "cloudctl.ansible": ["playbooks/*.yml"],
        "cloudctl.emulate": ["data/kubernetes/NOTICE", "data/kubernetes/manifest.json",
                             "data/kubernetes/**/*.gz"],
        **{pkg: ["**/*"] for pkg in DATA_DIRS},
    },
    include_package_data=False,
)
