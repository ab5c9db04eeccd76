"""Builds the Cython z-buffer kernel in place: `.venv/bin/python setup.py build_ext --inplace`.

Only `core._rasterize` is compiled; everything else is plain Python. Without the compiled module
`core.render` falls back to a NumPy twin of the kernel (same results, slower).
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "core._rasterize",
        ["core/_rasterize.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # No fused multiply-add: keeps results bit-identical to the NumPy fallback.
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
]

setup(
    name="inorig-render-kernels",
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    zip_safe=False,
)
