"""A local proxy that makes a JupyterHub user server look like a plain Jupyter server on localhost."""

__version__ = "0.1.0"
