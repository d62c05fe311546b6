"""What `restore` costs on top of the model: the command's throughput on a folder of photos and on a
video, against the Restorer's own on the same frames already decoded in memory.

    python benchmarks/restore_pipeline.py [--photos 24] [--frames 48] [--rounds 3] [--threads 2]

One process, one model (the demo denoiser in ONNX Runtime, the default mode). Each
round runs the four contenders in turn, the first rotating: the command on the folder (read, decode,
restore, encode PNG, write: three overlapping stages), the Restorer on the decoded photos, the
command on the video (decode, restore, encode H.264 CRF 18, mux), the Restorer on the decoded frames.
Printed: median images (frames) per second, the spread, and the ratio command / Restorer.
"""
from __future__ import annotations

import argparse
import fractions
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np



def demo_graph(folder: Path) -> Path:
    """The demo denoiser exported (and verified) into `folder`."""
    from hinet_deploy.export.checkpoint import load_checkpoint
    from hinet_deploy.export.onnx_export import export_onnx
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    graph = folder / "demo.onnx"
    export_onnx(load_checkpoint(DEMO_CHECKPOINT), graph, log=lambda m: None)
    return graph


def make_photos(folder: Path, count: int) -> None:
    """`count` noisy PNGs of the held-out photographs (sigma 25, the demo model's noise)."""
    from PIL import Image

    from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo

    folder.mkdir(parents=True, exist_ok=True)
    clean = [load_photo(name) for name in HELD_OUT]
    for i in range(count):
        noisy = add_gaussian_noise(clean[i % len(clean)], DEMO_NOISE_SIGMA, i)
        Image.fromarray(noisy).save(folder / f"{i:03d}.png")


def make_video(path: Path, frames: int, keyint: int = 250) -> None:
    """A 640x360 H.264 video of one held-out photograph with fresh noise in every frame; a keyframe
    every `keyint` frames (250: x264's default)."""
    import av
    from PIL import Image

    from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo

    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=25, options={"g": str(keyint), "sc_threshold": "0"})
    stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
    base = np.array(Image.fromarray(load_photo(HELD_OUT[0])).resize((640, 360)))
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(add_gaussian_noise(base, DEMO_NOISE_SIGMA, i), "rgb24")
        frame.pts, frame.time_base = i, fractions.Fraction(1, 25)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()


def decoded_video(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from hinet_deploy.restore.local import run_restore
    from hinet_deploy.restore.plan import plan_jobs
    from hinet_deploy.restore.report import RestoreOptions
    from hinet_deploy.runtime import Restorer
    from hinet_deploy.runtime.image_files import read_image_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graph = demo_graph(tmp)
        make_photos(tmp / "photos", args.photos)
        make_video(tmp / "clip.mp4", args.frames)
        photos = [read_image_file(p).pixels for p in sorted((tmp / "photos").iterdir())]
        frames = decoded_video(tmp / "clip.mp4")
        options = RestoreOptions(overwrite=True, quiet=True)
        with Restorer(graph, threads=args.threads) as restorer:
            def command(name):
                plan = plan_jobs([tmp / name], tmp / "out")
                run_restore(plan, restorer, options, log=lambda m: None)

            def in_memory(images):
                for image in images:
                    restorer(image)

            contenders = {"restore, folder": (lambda: command("photos"), len(photos)),
                          "Restorer, photos in memory": (lambda: in_memory(photos), len(photos)),
                          "restore, video": (lambda: command("clip.mp4"), len(frames)),
                          "Restorer, frames in memory": (lambda: in_memory(frames), len(frames))}
            in_memory(photos[:1])  # warm-up
            rates = {name: [] for name in contenders}
            keys = list(contenders)
            for r in range(args.rounds):
                for name in keys[r % len(keys):] + keys[:r % len(keys)]:
                    run, count = contenders[name]
                    start = time.perf_counter()
                    run()
                    rates[name].append(count / (time.perf_counter() - start))
        print(f"{args.photos} photos ({', '.join(sorted({f'{p.shape[1]}x{p.shape[0]}' for p in photos}))}), "
              f"a {len(frames)}-frame 640x360 H.264 video; demo model, ONNX Runtime, default mode, "
              f"{args.threads} threads; median of {args.rounds} alternated rounds\n")
        print("| contender | images/s (median) | min-max |\n|---|---|---|")
        for name, values in rates.items():
            print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")
        folder = statistics.median(rates["restore, folder"]) / statistics.median(
            rates["Restorer, photos in memory"])
        video = statistics.median(rates["restore, video"]) / statistics.median(
            rates["Restorer, frames in memory"])
        print(f"\nrestore / Restorer: folder {folder:.3f}, video {video:.3f}")


if __name__ == "__main__":
    main()
