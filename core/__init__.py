"""INORig-open's core: face models, camera, lighting, rendering, fitting and rigs (no I/O, no networks).

Import names of the project (distribution ``inorig``): ``core``, ``models``, ``utils``
(docs/architecture.md says what each holds and may import).
"""

__version__ = "0.7.0"
