"""Speed of image formation: rasterizing the ICT face region and sampling feature maps.

    .venv/bin/python -m benchmarks.bench_render [--model external/ICT-FaceKit] [--repeats 30]
        [--threads N]

Prints a table of median and best wall times (ms). Targets (issue 3): rasterizing the ICT face
region (9,409 vertices, 18,461 triangles) into 256x256 under 5 ms with the Cython kernel; sampling
10k points from a (8, 64, 256, 256) feature map, forward + backward, under 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from core.camera import euler_to_matrix, weak_perspective_screen  # noqa: E402
from core.face_model.load import load_face_model  # noqa: E402
from core.render.rasterize import kernel_built, rasterize  # noqa: E402
from core.render.visibility import vertex_visibility  # noqa: E402
from core.sampling import sample_points  # noqa: E402

SIZE = 256


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and best wall time of ``fn`` in ms, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def face_screen(model_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ICT face region, frontal, filling a 256x256 crop as the fitter sees it."""
    from utils.get_face_model import ICT_DIR

    face = load_face_model("ict", model_dir or ICT_DIR, region="face")
    verts = face.neutral[None]
    lo, hi = verts[0].amin(0), verts[0].amax(0)
    scale = 0.9 * SIZE / float((hi - lo)[:2].max())
    R = euler_to_matrix(torch.tensor([[0.1, 0.3, 0.0]]))
    screen = weak_perspective_screen(verts - (lo + hi) / 2, R, torch.tensor([scale]),
                                     torch.tensor([[(SIZE - 1) / 2, (SIZE - 1) / 2]]))
    return screen, face.triangles


def bench_rasterize(screen: torch.Tensor, triangles: torch.Tensor, repeats: int) -> list[tuple]:
    """Rows (case, median, best) for each rasterizer backend."""
    rows = []
    backends = ["cython", "numpy"] if kernel_built() else ["numpy"]
    for backend in backends:
        med, best = _time(lambda: rasterize(screen, triangles, SIZE, SIZE,
                                                   backend=backend), repeats)
        rows.append((f"rasterize ICT face 256x256, {backend}", med, best))
    with_grad = screen.clone().requires_grad_()
    med, best = _time(lambda: rasterize(with_grad, triangles, SIZE, SIZE), repeats)
    rows.append(("rasterize, differentiable bary (auto)", med, best))
    med, best = _time(lambda: vertex_visibility(screen, triangles, (SIZE, SIZE)), repeats)
    rows.append(("vertex_visibility incl. rasterize (auto)", med, best))
    return rows


def bench_sampling(screen: torch.Tensor, repeats: int) -> list[tuple]:
    """Rows for sampling 10k projected points from (8, 64, 256, 256) features, fwd + bwd."""
    gen = torch.Generator().manual_seed(0)
    batch, channels, n_points = 8, 64, 10_000
    points = screen[0, :, :2]
    points = torch.cat([points, points[: n_points - len(points)] + 0.5])[None]
    uv = (points + torch.rand(batch, n_points, 2, generator=gen)).contiguous()
    features = torch.rand(batch, channels, SIZE, SIZE, generator=gen)
    rows = []
    for layout, image in (("NCHW", features),
                          ("channels_last", features.contiguous(
                              memory_format=torch.channels_last))):
        for wrt_image in (False, True):
            feats = image.detach().requires_grad_(wrt_image)
            pos = uv.clone().requires_grad_()

            def step() -> None:
                sample_points(feats, pos).sum().backward()
                pos.grad = None
                feats.grad = None

            med, best = _time(step, repeats)
            target = "uv + features" if wrt_image else "uv"
            rows.append((f"sample 8x10k from 8x64x256x256 {layout}, grad {target}", med, best))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ICT-FaceKit folder")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    screen, triangles = face_screen(args.model)
    rows = bench_rasterize(screen, triangles, args.repeats)
    rows += bench_sampling(screen, max(args.repeats // 3, 5))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{screen.shape[1]} vertices, {len(triangles)} triangles")
    print(f"| {'case':<62} | median ms | best ms |")
    print(f"|{'-' * 64}|-----------|---------|")
    for name, med, best in rows:
        print(f"| {name:<62} | {med:9.2f} | {best:7.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
