"""The compiled part of the project: the Cython z-buffer kernel ``core.render._rasterize``.

Everything else (metadata, dependencies, packages) is in pyproject.toml; this file only declares
the extension, whose include path comes from numpy at build time. ``make setup`` runs
``pip install --no-build-isolation -e .``, which builds it in place. Without the compiled module
`core.render.rasterize` falls back to a NumPy twin of the kernel (same results, slower).
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "core.render._rasterize",
        ["core/render/_rasterize.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # No fused multiply-add: keeps results bit-identical to the NumPy fallback.
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}), zip_safe=False)
