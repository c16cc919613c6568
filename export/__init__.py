"""Build time: PyTorch models -> ONNX bundles.

- `model/`: the reference model family (config, transformer, codec, the whole model);
- `onnx/`: the graph roles, the exporter that writes a bundle, int8 weights;
- `reference.py`: the plain eager `generate()` every fast path is checked against.

Imports only `cadenza.engine.contract` from the run time (the bundle format and the text rules).
"""
