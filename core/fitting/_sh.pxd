# cython: language_level=3
"""SH irradiance for the compiled passes that shade vertices or texels (`core.fitting._shading`,
`core.rig._texels`): the nine basis values at a unit normal (``core.lighting.sh_basis`` written out,
``f`` its factors, ``core.lighting.SH_FACTORS`` as float32) and their product with one colour
channel of a (9, 3) lighting (``core.lighting.sh_shading``)."""


cdef inline void sh_basis(const float* f, float nx, float ny, float nz, float* b) noexcept nogil:
    """``b[0:9]``, the basis at (nx, ny, nz)."""
    b[0] = f[0]
    b[1] = f[1] * ny
    b[2] = f[2] * nz
    b[3] = f[3] * nx
    b[4] = f[4] * nx * ny
    b[5] = f[5] * ny * nz
    b[6] = f[6] * (3.0 * nz * nz - 1.0)
    b[7] = f[7] * nx * nz
    b[8] = f[8] * (nx * nx - ny * ny)


cdef inline float sh_irradiance(const float* b, const float* sh, Py_ssize_t c) noexcept nogil:
    """Channel ``c`` of the (9, 3) row-major lighting ``sh`` at the basis values ``b``: the nine
    products added in order in float32."""
    cdef float total = 0.0
    cdef Py_ssize_t k
    for k in range(9):
        total = total + b[k] * sh[3 * k + c]
    return total
