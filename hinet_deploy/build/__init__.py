"""The build flow: checkpoint -> verified FP32 graph -> graph of a precision -> engine. It chains the
stages (export, calib, engines) for `hinet-deploy build`, the card's `build_trt.py` and the checks.
"""
