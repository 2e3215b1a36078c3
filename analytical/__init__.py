"""Analytical cost models from declarative device specs: roofline, Eyeriss-like, FPGA.

``analytical.roofline`` (CPU/GPU roofline over fused kernels, calibrated by
``analytical.calibrate``), ``analytical.eyeriss`` (row-stationary dataflow with
per-action energy), ``analytical.fpga`` (layer-wise DSP/BRAM/DDR accelerator).
Device data lives in ``analytical/specs/*.toml`` (see ``analytical.specs``).
Nothing is read at import time.
"""
