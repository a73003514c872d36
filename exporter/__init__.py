"""torch -> ONNX, graph optimization, engine building per profile."""
