"""Data: the corpora and their splits (:mod:`.corpora`), your own corpus as a manifest CSV
(:mod:`.manifest`), MIDI rendering (:mod:`.render`), the training windows mixed on the fly
(:mod:`.mixing`), held-out programmes (:mod:`.make_mix`) and cached clip descriptors
(:mod:`.handcrafted`)."""
