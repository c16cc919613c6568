"""ONNX export: `graphs.py` (the six roles), `to_onnx.py` (bundle + manifest), `quantize.py` (int8 weights)."""
