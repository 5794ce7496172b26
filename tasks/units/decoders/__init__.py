"""Units -> audio backends behind one interface (`interface`): CosyVoice 2's own code (`cosyvoice2`)
and the learned decoder trained on our units (`tasks.units.decoder`)."""
