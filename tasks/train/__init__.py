"""Stage 3, staged training: data path, loop, LoRA, model factory, checkpoints, text tokenizer
(`steps` is what the flow calls)."""
