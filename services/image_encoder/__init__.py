"""Image encoder: EfficientNet-Lite0 (ImageNet) features behind the encoder gRPC shape."""
