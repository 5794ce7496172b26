"""Stage 1, spoken dialogues: sources read into dialogues, text made speakable, synthesis on Ray,
validated shards published (`steps` is what the flows call)."""
