"""Installs vonet_jax (and the `configs` package, so configs import their base anywhere)."""
import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent
REQUIREMENTS = [
    line.strip() for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setuptools.setup(
    name="vonet_jax",
    version="0.1.0",
    description="VONet (ICLR 2024) unsupervised video object learning in JAX/Flax",
    packages=setuptools.find_packages(include=["vonet_jax", "vonet_jax.*", "configs"]),
    python_requires=">=3.11",
    install_requires=REQUIREMENTS,
    extras_require={
        "test": [
            "pytest==9.2.0", "scikit-learn==1.9.1", "nbclient==0.11.0", "nbformat==5.11.1",
            "ipykernel==7.4.0", "pytest-xdist==3.8.0",
        ],
    },
)
