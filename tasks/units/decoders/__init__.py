"""Units -> audio backends, one module each behind one interface (`interface`): the learned decoder
trained on our units (`learned`, the offline default) and CosyVoice 2's own code (`cosyvoice2`).
`tasks.units.decoder` versions them as artifacts and opens them."""
