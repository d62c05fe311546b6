"""Files from elsewhere are untrusted, and one bad file never stops the rest: a table per class of
hostile or careless input, each run through the real command where the user would meet it."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, edited_engine_copy, small_rtx_engine
from hinet_deploy.cli import main
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.export.shipped import DEMO_CHECKPOINT

PEAK_CHILD = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(done.stdout)
sys.stderr.write(done.stderr)
print(f"peak-kb {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(done.returncode)
"""


def run_measured(*args, env=None) -> tuple[subprocess.CompletedProcess, float]:
    """The command in a child, and the peak memory (MB) of that child alone."""
    done = subprocess.run([sys.executable, "-c", PEAK_CHILD, sys.executable, "-m",
                           "hinet_deploy.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    lines = done.stderr.strip().splitlines()
    peak = int(lines[-1].split()[1]) / 1024
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout,
                                       "\n".join(lines[:-1])), peak


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# --- engine sidecars: confinement, recorded sizes and hashes, types --------------------------

@pytest.fixture(scope="module")
def engine_folder(small_ckpt, tmp_path_factory):
    return small_rtx_engine(small_ckpt, tmp_path_factory.mktemp("engine"))


def _graph_elsewhere(sidecar, folder):
    outside = folder.parent / "elsewhere.onnx"
    outside.write_bytes(b"not yours")
    (folder / "link.onnx").symlink_to(outside)
    sidecar["facts"]["onnx"] = "link.onnx"


@pytest.mark.parametrize("edit, message", [
    (lambda s, f: s["facts"].update(onnx="../../etc/passwd"), "outside its own folder"),
    (lambda s, f: s["facts"].update(onnx="/etc/passwd"), "outside its own folder"),
    (_graph_elsewhere, "leads out of"),
], ids=["dotdot", "absolute", "symlink-out"])
def test_a_sidecar_path_out_of_its_folder_is_neither_read_nor_shipped(engine_folder, tmp_path,
                                                                      edit, message):
    """What goes to Ray workers (TensorRtBackend.model_files): the engine and its sidecar, never
    the file a hostile sidecar names; reading that path at all is refused."""
    from hinet_deploy.engines.sidecar import read_sidecar
    from hinet_deploy.runtime.backends import TensorRtBackend

    engine = edited_engine_copy(engine_folder, tmp_path, edit)
    shipped = TensorRtBackend.model_files(engine)
    assert shipped == [engine, engine.with_name(engine.name + ".json")]
    with pytest.raises(HinetDeployError, match=message):
        read_sidecar(engine).path_fact("onnx", engine)


@pytest.mark.parametrize("edit, message", [
    (lambda s, f: s["facts"].update(onnx_sha256="0" * 64), "does not match the SHA-256"),
    (lambda s, f: s["facts"].update(engine_bytes=s["facts"]["engine_bytes"] + 1),
     "not the file that was built"),
], ids=["graph-hash", "engine-size"])
def test_files_that_differ_from_their_record_are_refused(engine_folder, tmp_path, edit, message):
    from hinet_deploy.runtime.backends import TensorRtBackend

    engine = edited_engine_copy(engine_folder, tmp_path, edit)
    with pytest.raises(HinetDeployError, match=message):
        TensorRtBackend.model_files(engine)


@pytest.mark.parametrize("edit, message", [
    (lambda s, f: s.update(schema="2"), "schema is a string '2', not int"),
    (lambda s, f: s.update(profile="big"), "profile is a string 'big', not dict"),
    (lambda s, f: s["profile"].update(max=[1, 3, "big", 128]), "profile max is"),
    (lambda s, f: s["facts"].update(engine_bytes="many"), "engine_bytes is a string"),
    (lambda s, f: s.update(hin_plugin="yes"), "hin_plugin is a string 'yes', not bool"),
], ids=["schema", "profile", "profile-shape", "fact", "flag"])
def test_a_sidecar_of_the_wrong_types_is_one_line(engine_folder, tmp_path, edit, message, capsys):
    engine = edited_engine_copy(engine_folder, tmp_path, edit)
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32)).save(photo)
    code = main(["restore", str(photo), "-o", str(tmp_path / "out"), "--model", str(engine)])
    err = capsys.readouterr().err
    assert code == 2 and message in last_line(err) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_graph_whose_external_data_is_outside_its_folder_is_one_line(small_onnx, tmp_path,
                                                                       capsys):
    import onnx

    model = onnx.load(str(small_onnx))
    folder = tmp_path / "graph"
    folder.mkdir()
    onnx.save(model, str(folder / "g.onnx"), save_as_external_data=True, location="g.data",
              size_threshold=0)
    hostile = onnx.load(str(folder / "g.onnx"), load_external_data=False)
    for tensor in hostile.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(hostile, str(folder / "g.onnx"))
    for command in (["macs", "--onnx", str(folder / "g.onnx")],
                    ["build", "--fp16", "--onnx", str(folder / "g.onnx"), "-o",
                     str(tmp_path / "e.engine")]):
        assert main(command) == 2
        assert "outside its own folder" in last_line(capsys.readouterr().err)


def _write_sidecar_text(engine_folder, tmp_path, text: bytes | None = None, make=None):
    """The engine's folder copied, its sidecar replaced by `text` (or made by make(path))."""
    engine = edited_engine_copy(engine_folder, tmp_path, lambda s, f: None)
    sidecar = engine.with_name(engine.name + ".json")
    sidecar.unlink()
    if make is not None:
        make(sidecar)
    else:
        sidecar.write_bytes(text)
    return engine


def _schema_1(**profiles) -> bytes:
    return json.dumps({"backend": "tensorrt_rtx", "backend_version": "1.7.1.116",
                       "precision": "fp32", **profiles}).encode()


@pytest.mark.parametrize("text, make, message", [
    (b"[" * 100_000 + b"]" * 100_000, None, "not valid JSON (nested too deeply)"),
    (b'{"schema": ' + b"7" * 5000 + b"}", None, "not valid JSON (Exceeds the limit"),
    (b"\xff\xfe{}", None, "not valid JSON"),
    (_schema_1(profiles={"min": 1}), None, "(schema 1) is malformed"),
    (_schema_1(profiles=5), None, "(schema 1) is malformed"),
    (_schema_1(profiles=[{"min": [1, 3, 32, 32]}]), None, "profile opt is None"),
    (_schema_1(profiles=["big"]), None, "profile is a string 'big'"),
    (None, lambda p: os.truncate(os.open(p, os.O_CREAT | os.O_WRONLY), 300 * 2**20),
     "over the 4 MB such a file can be"),
    (None, os.mkfifo, "is a FIFO (named pipe), not a regular file"),
], ids=["deep", "digits", "not-utf8", "profiles-dict", "profiles-int", "profile-partial",
        "profile-str", "300MB", "fifo"])
def test_every_malformed_sidecar_is_one_line(engine_folder, tmp_path, text, make, message,
                                             capsys):
    engine = _write_sidecar_text(engine_folder, tmp_path, text, make)
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32)).save(photo)
    code = main(["restore", str(photo), "-o", str(tmp_path / "out"), "--model", str(engine)])
    err = capsys.readouterr().err
    assert code == 2 and message in last_line(err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def _external_graph(small_onnx, folder: Path, location: str | None = None) -> Path:
    """The graph with its weights in g.data beside it; `location`: what it then names instead."""
    import onnx

    folder.mkdir()
    onnx.save(onnx.load(str(small_onnx)), str(folder / "g.onnx"), save_as_external_data=True,
              location="g.data", size_threshold=0)
    if location is not None:
        hostile = onnx.load(str(folder / "g.onnx"), load_external_data=False)
        for tensor in hostile.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(hostile, str(folder / "g.onnx"))
    return folder / "g.onnx"


@pytest.mark.parametrize("location, make, message", [
    ("g\0.data", None, "holds a NUL byte"),
    ("pipe.data", lambda f: os.mkfifo(f / "pipe.data"), "is a FIFO (named pipe)"),
    ("dev.data", lambda f: (f / "dev.data").symlink_to("/dev/zero"), None),
    ("gone.data", None, "is missing beside the graph"),
], ids=["nul", "fifo", "char-device", "missing"])
def test_bad_external_data_is_one_line_in_every_command(small_onnx, tmp_path, location, make,
                                                        message, capfd):
    graph = _external_graph(small_onnx, tmp_path / "graph", location)
    if make is not None:
        make(graph.parent)
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32)).save(photo)
    for command in (["macs", "--onnx", str(graph)],
                    ["build", "--fp16", "--onnx", str(graph), "-o", str(tmp_path / "e.engine")],
                    ["restore", str(photo), "-o", str(tmp_path / "out"), "--model", str(graph)]):
        assert main(command) == 2, command
        err = capfd.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "\x1b[" not in err, err  # no ORT dump
        line = last_line(err)
        if message is None:  # a device whose link leads out of the folder: refused either way
            assert "leads out of" in line or "character device" in line, line
        else:
            assert message in line, line


def test_a_graph_whose_data_onnxruntime_cannot_read_is_one_line_without_its_log(small_onnx,
                                                                                tmp_path, capfd):
    """Damaged external data (cut short): ONNX Runtime's coloured multi-line error log stays off
    the terminal; the project's line names the file."""
    graph = _external_graph(small_onnx, tmp_path / "graph")
    data = graph.with_name("g.data")
    data.write_bytes(data.read_bytes()[:100])
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32)).save(photo)
    assert main(["restore", str(photo), "-o", str(tmp_path / "out"), "--model", str(graph)]) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "\x1b[" not in err and "g.onnx" in err, err


def test_pillow_warnings_are_one_line_naming_the_file(tmp_path, small_onnx):
    """Pillow's `Corrupt EXIF data` UserWarning carries no file name: a PNG whose EXIF directory
    stops short restores, and the terminal shows the project's line naming it, no Python
    warning."""
    folder = tmp_path / "in"
    folder.mkdir()
    tiff_header_then_nothing = b"II*\x00\x08\x00\x00\x00\x05\x00"  # 5 entries announced, none
    Image.new("RGB", (32, 32), (10, 200, 30)).save(folder / "exif.png",
                                                   exif=tiff_header_then_nothing)
    run = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "restore", str(folder), "-o",
                          str(tmp_path / "out"), "--model", str(small_onnx), "--quiet"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0 and (tmp_path / "out" / "exif.png").is_file(), run.stderr
    assert "UserWarning" not in run.stderr and "warnings.warn" not in run.stderr, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"{folder / 'exif.png'}: Corrupt EXIF data") and line.endswith("(Pillow)")


def test_truncated_images_are_damaged_inputs_even_where_pillow_is_told_to_fill_them(tmp_path):
    """Another package may set ImageFile.LOAD_TRUNCATED_IMAGES (Pillow then fills the missing
    part with grey and says nothing): a file cut short is still a damaged input, named so."""
    import io

    from PIL import ImageFile

    from hinet_deploy.runtime.image_files import read_image_file

    pixels = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    for fmt, options in (("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}),
                         ("WEBP", {})):
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, fmt, **options)
        path = tmp_path / f"cut.{fmt.lower()}"
        path.write_bytes(encoded.getvalue()[:len(encoded.getvalue()) // 2])
        for fill in (False, True):
            saved = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = fill
            try:
                with pytest.raises(HinetDeployError, match=f"cannot read image {path}"):
                    read_image_file(path)
                assert ImageFile.LOAD_TRUNCATED_IMAGES == fill  # the caller's setting restored
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = saved


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF"])
def test_one_pixel_limit_ours_above_pillows(tmp_path, fmt):
    """Pillow refuses images over 2x its MAX_IMAGE_PIXELS (179 MP) with its own words; the
    project's limit is the one that holds, in both directions, from the header."""
    from PIL import Image as PilImage

    from hinet_deploy.runtime.image_files import read_image_file

    path = tmp_path / f"big.{fmt.lower()}"
    saved = PilImage.MAX_IMAGE_PIXELS
    PilImage.MAX_IMAGE_PIXELS = 1000  # Pillow's limit far below: a 64x64 image is a "bomb" to it
    try:
        PilImage.new("RGB" if fmt != "GIF" else "P", (64, 64)).save(path, fmt)
        assert read_image_file(path, max_pixels=64 * 64).pixels.shape[:2] == (64, 64)
        with pytest.raises(HinetDeployError, match="over the limit of 0.0 MP"):
            read_image_file(path, max_pixels=64 * 63)
    finally:
        PilImage.MAX_IMAGE_PIXELS = saved


# --- bounded cost before trusting a size ---------------------------------------------------

def _png16_bomb(path: Path, width: int, height: int) -> None:
    """A 16-bit RGB PNG of zeros, streamed: a small file that decodes to width*height*6 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(9), b"\0" * (1 + width * 6)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                       16, 2, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_decompression_bomb_png_is_refused_from_its_header(tmp_path, small_onnx):
    """14000x12000, 16 bits (1 GB decoded) in a file of about 1 MB: the default limit, sized to
    this machine, refuses it before pypng decodes a row."""
    bomb = tmp_path / "in" / "bomb.png"
    bomb.parent.mkdir()
    _png16_bomb(bomb, 14000, 12000)
    Image.new("RGB", (40, 32), (90, 120, 30)).save(tmp_path / "in" / "fine.png")
    env = {"HINET_DEPLOY_MAX_PIXELS": str(100_000_000)}  # this test's machine-sized default
    done, peak = run_measured("restore", tmp_path / "in", "-o", tmp_path / "out", "--model",
                              small_onnx, "--quiet", env=env)
    assert done.returncode == 1 and "over the limit of 100.0 MP" in done.stdout
    assert "HINET_DEPLOY_MAX_PIXELS" in done.stdout and (tmp_path / "out" / "fine.png").is_file()
    assert peak < 600, f"{peak:.0f} MB to refuse it"


def _video(path: Path, size) -> None:
    import av

    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
    for i in range(2):
        frame = av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24")
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()


def _tiff16(path, size):
    import tifffile

    tifffile.imwrite(path, np.zeros((size[1], size[0], 3), np.uint16), photometric="rgb")


@pytest.mark.parametrize("name, make", [
    ("pillow.jpg", lambda p, s: Image.new("RGB", s).save(p)),
    ("pypng.png", lambda p, s: _png16_bomb(p, *s)),
    ("tifffile.tif", _tiff16),
    ("pyav.mp4", _video),
], ids=["pillow", "pypng", "tifffile", "pyav"])
def test_every_reader_keeps_the_same_pixel_limit(tmp_path, small_onnx, name, make, capsys):
    make(tmp_path / name, (128, 96))
    out = tmp_path / "out"
    code = main(["restore", str(tmp_path / name), "-o", str(out), "--model", str(small_onnx),
                 "--quiet", "--max-megapixels", "0.01"])  # 10000 pixels; 128x96 is 12288
    said = capsys.readouterr().out
    assert code == 1 and "128x96 (0.0 MP), over the limit of 0.0 MP" in said
    assert list(out.iterdir()) == []


def _zip_bomb(path: Path, megabytes: int) -> None:
    """A torch-style zip archive whose one member deflates `megabytes` of zeros to about 1 MB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            zeros = b"\0" * 2**20
            for _ in range(megabytes):
                member.write(zeros)


def test_a_checkpoint_archive_is_bounded_before_anything_is_unpacked(tmp_path):
    bomb = tmp_path / "tiny.pth"
    _zip_bomb(bomb, 2300)
    assert bomb.stat().st_size < 4 * 2**20
    done, peak = run_measured("macs", "--ckpt", bomb)
    assert done.returncode == 2 and "decompression bomb" in last_line(done.stderr)
    assert "HINET_DEPLOY_MAX_CHECKPOINT_MB" in last_line(done.stderr)
    assert peak < 800, f"{peak:.0f} MB to refuse it"
    limited, _ = run_measured("export", "--ckpt", DEMO_CHECKPOINT, "-o", tmp_path / "d.onnx",
                              env={"HINET_DEPLOY_MAX_CHECKPOINT_MB": "1"})  # an 11 MB file
    assert limited.returncode == 2 and "over the limit of 1 MB" in last_line(limited.stderr)


# --- per-input isolation ------------------------------------------------------------------

def _bad_crc_png16(path: Path) -> None:
    _png16_bomb(path, 32, 24)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # inside IDAT's checksum
    path.write_bytes(bytes(data))


def _decompression_bomb_jpeg(path: Path) -> None:
    """A small JPEG whose header declares 60000x20000 (1200 MP): over the project's limit (the
    one that governs; Pillow's own is switched off while the project reads)."""
    Image.new("L", (64, 48)).save(path, quality=10)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 20000, 60000)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("bad, make", [
    ("b.png", _bad_crc_png16),
    ("b.jpg", _decompression_bomb_jpeg),
    ("b.png", lambda p: p.symlink_to(p)),
    ("b.tif", lambda p: p.write_bytes(b"II*\0" + b"\xff" * 64)),
], ids=["png-checksum", "pillow-bomb", "symlink-loop", "garbage-tiff"])
def test_a_bad_file_between_good_ones_fails_alone(tmp_path, small_onnx, bad, make, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        Image.new("RGB", (40, 32), (90, 120, 30)).save(folder / name)
    make(folder / bad)
    out = tmp_path / "out"
    code = main(["restore", str(folder), "-o", str(out), "--model", str(small_onnx), "--quiet",
                 "--max-megapixels", "500"])
    said = capsys.readouterr()
    assert code == 1 and "Traceback" not in said.err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert f"1 failed: {folder / bad}" in last_line(said.out)


def test_a_fixed_shape_graph_takes_images_smaller_than_its_input(small_ckpt, tmp_path, capsys):
    graph = tmp_path / "fixed.onnx"
    assert main(["export", "--ckpt", str(small_ckpt), "-o", str(graph), "--fixed-shape", "1", "64",
                 "64"]) == 0
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 32)).save(folder / "a.png")
    Image.new("RGB", (100, 80)).save(folder / "b.png")
    for mode in ("grids", "blend"):
        out = tmp_path / mode
        code = main(["restore", str(folder), "-o", str(out), "--model", str(graph), "--quiet",
                     "--mode", mode])  # a.png is smaller than the graph: mirrored out to 64x64
        assert code == 0 and "Traceback" not in capsys.readouterr().err
        assert Image.open(out / "a.png").size == (40, 32) and Image.open(out / "b.png").size == (
            100, 80)


# --- interrupts ---------------------------------------------------------------------------

def test_ctrl_c_during_inference_is_130_every_time(tmp_path):
    """The demo model on a large photo in whole-image mode: interrupted inside ONNX Runtime at
    three different moments, every run ends 130 with no abort and nothing written."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), np.uint8)).save(
        tmp_path / "big.png")
    graph = tmp_path / "demo.onnx"
    assert main(["export", "--ckpt", "demo", "-o", str(graph)]) == 0
    for delay in (1.5, 2.5, 3.5):
        out = tmp_path / f"out{delay}"
        proc = subprocess.Popen([sys.executable, "-m", "hinet_deploy.cli", "restore",
                                 str(tmp_path / "big.png"), "-o", str(out), "--model", str(graph),
                                 "--mode", "whole", "--quiet"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)
        assert proc.poll() is None, "ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-500:]
        assert "terminate called" not in err and "Traceback" not in err
        assert not out.exists() or list(out.iterdir()) == []


# --- Ray and options ------------------------------------------------------------------------

def test_an_unreachable_ray_address_fails_in_seconds(tmp_path, small_onnx, capsys):
    Image.new("RGB", (40, 32)).save(tmp_path / "a.png")
    start = time.monotonic()
    code = main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model",
                 str(small_onnx), "--ray", "--ray-address", "127.0.0.1:1"])
    assert code == 2 and time.monotonic() - start < 10
    assert "cannot reach Ray at 127.0.0.1:1" in last_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_stale_model_folders_of_dead_actors_are_removed(tmp_path):
    from hinet_deploy.restore.cluster import MODEL_FOLDER_PREFIX, remove_stale_model_folders

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f"{MODEL_FOLDER_PREFIX}{dead}-abc"
    alive = tmp_path / f"{MODEL_FOLDER_PREFIX}{os.getppid()}-def"
    for folder in (stale, alive):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x")
    assert remove_stale_model_folders(tmp_path) == [stale]
    assert not stale.exists() and alive.exists()


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return exc.code


@pytest.mark.parametrize("option, message", [
    (["--crf", "99"], "outside libx264's range 0-51"),
    (["--codec", "aac"], "is an audio encoder"),
    (["--pix-fmt", "bogus"], "not a pixel format FFmpeg knows"),
    (["--jpeg-quality", "101"], "not a quality of 1 to 100"),
    (["--max-megapixels", "0"], "not above 0"),
], ids=["crf", "codec", "pix-fmt", "jpeg-quality", "max-pixels"])
def test_options_are_checked_before_anything_is_made(tmp_path, small_onnx, option, message,
                                                     capsys):
    Image.new("RGB", (40, 32)).save(tmp_path / "a.png")
    code = _exit_code(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"),
                       "--model", str(small_onnx), *option])
    assert code == 2 and message in last_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    ({"threads": "2"}, "threads must be a whole number, not str '2'"),
    ({"batch": 2.5}, "batch must be a whole number, not float 2.5"),
    ({"tile": 0}, "tile must be at least 1, not 0"),
    ({"memory_budget_mb": -1}, "memory_budget_mb must be a number above 0"),
    ({"mode": "fast"}, "mode must be one of whole, grids, blend"),
])
def test_the_restorers_options_are_checked_when_it_is_made(small_onnx, options, message):
    from hinet_deploy.runtime import Restorer

    with pytest.raises(HinetDeployError, match=message):
        Restorer(small_onnx, **options)


def test_a_closed_restorer_says_so(small_onnx):
    from hinet_deploy.runtime import Restorer

    restorer = Restorer(small_onnx)
    restorer.close()
    restorer.close()  # twice is fine
    with pytest.raises(HinetDeployError, match="this Restorer was closed"):
        restorer(np.zeros((16, 16, 3), np.uint8))


def test_a_video_killed_with_9_leaves_nothing_after_the_next_run(tmp_path, small_onnx):
    from test_video import make_video

    make_video(tmp_path / "long.mp4", frames=200, size=(640, 480))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hinet_deploy.cli", "restore",
                             str(tmp_path / "long.mp4"), "-o", str(out), "--model",
                             str(small_onnx), "--quiet"])
    deadline = time.monotonic() + 60
    while not any(out.glob(".long.mp4.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert any(out.glob(".long.mp4.*"))  # what kill -9 leaves
    make_video(tmp_path / "long.mp4", frames=4)  # the same name, quick to restore again
    assert main(["restore", str(tmp_path / "long.mp4"), "-o", str(out), "--model",
                 str(small_onnx), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["long.mp4"]
