"""Analytical cost models from declarative device specs: roofline, Eyeriss, FPGA.

``analytical.roofline`` (CPU/GPU roofline over fused kernels, calibrated by
``analytical.calibrate``), ``analytical.predictor`` (Eyeriss as HW-NAS-Bench costs it:
the DNN-Chip Predictor's tiling model, the default ``eyeriss``), ``analytical.eyeriss``
(a physically derived row-stationary model, ``eyeriss:eyeriss_rs``), ``analytical.fpga``
(layer-wise DSP/BRAM/DDR accelerator). Device data lives in ``analytical/specs/*.toml``
(see ``analytical.specs``); what each model reproduces is in ``analytical/README.md``.
Nothing is read at import time.
"""
