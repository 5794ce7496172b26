"""What several stages share: dialogue records, audio helpers, ASR and MOS scorers, Ray helpers,
incremental-version keys, thread scoping and the CosyVoice 2 loader."""
