"""The compiled part of the project: the Cython kernels ``core.render._rasterize`` (z-buffer),
``core.fitting._shading`` (the photometric stage's colour term with its gradient),
``core.rig._diffusion`` (the texture's colour diffusion rounds), ``core.rig._texels`` (each photo's
texel estimates for the texture), ``utils.io._text`` (the mesh writers' number formatting, with the
interpreter lock released) and ``utils.landmarks._dlib_format`` (dlib's shape predictor file read
into arrays, and its prediction).

Everything else (metadata, dependencies, packages) is in pyproject.toml; this file only declares the
extensions, whose include path comes from numpy at build time. ``make setup`` runs ``pip install
--no-build-isolation -e .``, which builds them in place. Without the compiled modules
`core.render.rasterize` falls back to a NumPy twin of its kernel (same results, slower) and
`core.fitting.colour_term` to the composed torch functions (same cost to float rounding, slower),
`core.rig.texture_fit` to SciPy's sparse products (the same bits, slower) and to the composed torch
functions for its texels (to float rounding, slower), `utils.io.text` to Python's formatting (the
same text; it holds the interpreter lock), and the dlib landmarker to dlib's own shape predictor
(the same landmarks; 0.45 s to load).
"""

import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []

extensions = [
    Extension(
        "core.render._rasterize",
        ["core/render/_rasterize.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # No fused multiply-add: keeps results bit-identical to the NumPy fallback.
        extra_compile_args=["-O3", "-ffp-contract=off"],
    ),
    Extension(
        "core.fitting._shading",
        ["core/fitting/_shading.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # OpenMP where the compiler has it as -fopenmp (GCC on Linux): the pass runs its images in
        # parallel; elsewhere its parallel loops compile as plain ones.
        extra_compile_args=["-O3"] + OPENMP,
        extra_link_args=OPENMP,
    ),
    Extension(
        "core.rig._diffusion",
        ["core/rig/_diffusion.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # OpenMP as above (the rows of each round in parallel); no fused multiply-add: the rounds
        # are SciPy's sparse products to the bit.
        extra_compile_args=["-O3", "-ffp-contract=off"] + OPENMP,
        extra_link_args=OPENMP,
    ),
    Extension(
        "core.rig._texels",
        ["core/rig/_texels.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # no fused multiply-add: the texels' points are `_at_texels`' float32 sums to the bit
        extra_compile_args=["-O3", "-ffp-contract=off"],
    ),
    Extension("utils.io._text", ["utils/io/_text.pyx"], extra_compile_args=["-O3"]),
    Extension("utils.landmarks._dlib_format", ["utils/landmarks/_dlib_format.pyx"],
              include_dirs=[numpy.get_include()],
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
              # no fused multiply-add: dlib's float32 arithmetic, each product rounded
              extra_compile_args=["-O3", "-ffp-contract=off"]),
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}), zip_safe=False)
