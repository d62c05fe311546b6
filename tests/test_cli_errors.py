"""Every command crossed with the bad inputs a user gives it: exit code 2, the error in one line
(the last printed), no traceback, and no new file left anywhere the command writes."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hinet_deploy.cli import main


def _unwritable(tmp_path: Path) -> Path:
    """A folder nothing can be written into. root ignores permission bits, so as root: a name under
    /sys, where creating anything fails (EPERM) whoever asks."""
    if os.geteuid() == 0:
        return Path("/sys/hinet-deploy-test-output")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.fixture
def bad(tmp_path, small_ckpt, small_onnx):
    """Named bad inputs, made in the command's working directory."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "empty").write_bytes(b"")
    data = small_onnx.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    ckpt = small_ckpt.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(ckpt[: len(ckpt) // 2])
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(tmp_path / "photo.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "tiny.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    shutil.copy(small_ckpt, tmp_path / "good.pth")
    shutil.copy(small_onnx, tmp_path / "good.onnx")
    return {"ro": str(_unwritable(tmp_path))}


# (command line, words the error line must contain); {ro} is the unwritable folder.
CASES = [
    # restore (failures of single inputs are exit 1: tests/test_restore.py)
    ("restore missing.png -o out --model good.onnx", "input missing.png does not exist"),
    ("restore photo.png -o out --model missing.onnx", "model missing.onnx does not exist"),
    ("restore photo.png -o out --model dir", "is a directory"),
    ("restore photo.png -o out --model empty", "is empty"),
    ("restore photo.png -o out --model truncated.onnx", "truncated.onnx"),
    ("restore photo.png -o out --model photo.png", "photo.png"),
    ("restore photo.png -o {ro} --model good.onnx", "cannot write"),
    ("restore photo.png -o photo.png --model good.onnx", "would be overwritten by its own output"),
    ("restore photo.png -o out --model good.onnx --tile 0", "not at least 1"),
    ("restore photo.png -o out --model good.onnx --mode blend --tile 40", "multiple of 16"),
    ("restore photo.png -o out --model good.onnx --jpeg-quality -1", "not at least 1"),
    ("restore dir -o dir --model good.onnx", "-o dir is the input folder dir"),
    # claims
    ("claims --size 30 30", "multiples of 16"),
    ("claims --size 0 256", "not at least 1"),
    ("claims --repeats 0", "not at least 1"),
    ("claims --tasks nonsense", "invalid choice"),
    ("claims --json dir", "is a directory"),
    ("claims --json {ro}/claims.json", "cannot write"),
    # export
    ("export --ckpt missing.pth", "does not exist"),
    ("export --ckpt dir", "is a directory"),
    ("export --ckpt empty", "is empty"),
    ("export --ckpt truncated.pth", "truncated"),
    ("export --ckpt photo.png", "not a PyTorch checkpoint"),
    ("export --ckpt good.pth -o dir", "is a directory"),
    ("export --ckpt good.pth -o {ro}/x.onnx", "cannot write"),
    ("export --ckpt good.pth --opset 3", "opset"),
    # build (a model and outputs are checked before any TensorRT work)
    ("build --fp16 --onnx missing.onnx", "does not exist"),
    ("build --fp16 --onnx dir", "is a directory"),
    ("build --fp16 --onnx empty", "is empty"),
    ("build --fp16 --onnx truncated.onnx", "not a readable ONNX graph"),
    ("build --fp16 --onnx good.pth", "not a readable ONNX graph"),
    ("build --fp16 --ckpt dir", "is a directory"),
    ("build --fp16 --onnx good.onnx -o dir", "is a directory"),
    ("build --fp16 --onnx good.onnx -o {ro}/x.engine", "cannot write"),
    ("build --fp16 --workspace-mb -5", "not at least 1"),
    ("build --int8 --calib-count 0", "not at least 1"),
    ("build --fp16 --onnx good.onnx --calib-dir dir", "--calib-dir is for --int8"),
    ("build --int8 --onnx good.onnx --calib-dir missing", "does not exist"),
    ("build --fp16 --onnx good.onnx --compute-capability SM99", "SM99"),
    # macs
    ("macs --onnx missing.onnx", "does not exist"),
    ("macs --onnx dir", "is a directory"),
    ("macs --onnx empty", "is empty"),
    ("macs --onnx truncated.onnx", "not a readable ONNX graph"),
    ("macs --onnx photo.png", "not a readable ONNX graph"),
    ("macs --ckpt truncated.pth", "truncated"),
    ("macs --variant nonsense", "unknown variant"),
    ("macs --variant sidd-0.5x --size 0 256", "not at least 1"),
    # demo
    ("demo --image missing.png", "does not exist"),
    ("demo --image dir", "is a directory"),
    ("demo --image empty", "is empty"),
    ("demo --image bad.png", "cannot read image"),
    ("demo --image good.pth", "cannot read image"),
    ("demo -o {ro}", "cannot write"),
    ("demo -o photo.png", "not a directory"),
    # validate
    ("validate --ckpt missing.pth", "does not exist"),
    ("validate --ckpt truncated.pth", "truncated"),
    ("validate --ckpt good.pth --data missing", "does not exist"),
    ("validate --ckpt good.pth --data dir", "no images"),
    ("validate --ckpt good.pth --out-dir {ro}", "cannot write"),
    ("validate --ckpt good.pth --json dir", "is a directory"),
    ("validate --ckpt good.pth --sigma -3", "not a noise level"),
    # bench
    ("bench --ckpt missing.pth", "does not exist"),
    ("bench --ckpt empty", "is empty"),
    ("bench --ckpt good.pth --sizes 0x16", "not at least 1"),
    ("bench --ckpt good.pth --sizes big", "not WIDTHxHEIGHT"),
    ("bench --ckpt good.pth --repeats 0", "not at least 1"),
    ("bench --ckpt good.pth --out-dir {ro}", "cannot write"),
    ("bench --ckpt good.pth --json dir", "is a directory"),
    # fidelity
    ("fidelity --ckpt dir", "is a directory"),
    ("fidelity --ckpt photo.png", "photo.png"),
    ("fidelity --ckpt good.pth --out-dir {ro}", "cannot write"),
    ("fidelity --ckpt good.pth --json dir", "is a directory"),
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("line, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(line, words, bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    try:
        code = main(line.format(**bad).split())
    except SystemExit as exc:  # argparse's own refusals (types, choices)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert words in last, last
    assert "error:" in last
    assert _files(tmp_path) == before, "files left behind"



def test_every_option_of_every_command_has_help_and_examples():
    import argparse

    from hinet_deploy.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) >= {"export", "build", "macs", "demo", "validate", "bench", "fidelity"}
    for name, command in sub.choices.items():
        missing = [a.option_strings[0] if a.option_strings else a.dest for a in command._actions
                   if not a.help and not isinstance(a, argparse._HelpAction)]
        assert not missing, f"{name}: options without help: {missing}"
        assert command.epilog and f"hinet-deploy {name}" in command.epilog, f"{name}: no examples"
