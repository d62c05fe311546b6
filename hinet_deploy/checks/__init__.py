"""The checks: `validate`, `fidelity`, `bench` and `claims`. They share one list of contenders
(`contenders`) and one timing routine (`timing`), and report on the machine they ran on.
"""
