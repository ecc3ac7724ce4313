"""skinonnx: train a ResNet50 skin-lesion classifier in PyTorch, deploy it as a self-describing ONNX file."""

__version__ = "0.1.0"
