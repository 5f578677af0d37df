# Metadata lives in pyproject.toml (PEP 621); this file lets older tools install the package.
from setuptools import setup

setup()
