"""The work of each pipeline stage, one folder a stage, in pipeline order: `build` (spoken
dialogues), `units` (speech tokens and units -> audio), `train` (staged training), `evaluate`
(streaming evaluation); `common` holds what several stages share. Each stage's `steps` module is
what its flow calls. A stage imports `common` and earlier stages only."""
