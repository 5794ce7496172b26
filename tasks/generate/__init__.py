"""Stage 0: multi-turn dialogues written by an LLM from single-turn instructions."""
