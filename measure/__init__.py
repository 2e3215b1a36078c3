"""Measurement: build (ORT session / TVM module) and run (local or TVM RPC) networks.

Import-light: runtimes are imported inside the functions that need them.
"""
