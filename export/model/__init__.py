"""The reference model family: `config.py` (sizes), `transformer.py`, `codec.py`, `model.py` (`TTSModel`)."""
