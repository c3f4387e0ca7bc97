"""Liên thông composition root: configuration, CLI, start-up and shutdown of the services.

The three services (``media``, ``mail``, ``web``) never import each other's internals; this
package wires them together through their public faces (each package's ``__init__``).
"""

__version__ = "0.1.0"
