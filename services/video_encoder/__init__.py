"""Video encoder: sampled frames through the image network, pooled over time, behind the encoder gRPC shape."""
