"""treadle built-in plugin: the ONNX export format."""
