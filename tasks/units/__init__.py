"""Stage 2, speech units: tokenizers (k-means, S3), tokenization on Ray, the units -> audio decoder,
the round trip and the VocalNet import (`steps` is what the flows call)."""
