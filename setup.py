"""The one compiled part: ``media._fastpath`` (the SFU's per-packet fan-out in C: the loop over a
source's slots, the slot rewriters, SRTP protect and ``sendto``).

Optional: when no C compiler or Python headers are at hand the build goes on without it and
``media`` does the same work in Python (slower; ``media.native``).  Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("media._fastpath", ["media/_fastpath.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers"])])
