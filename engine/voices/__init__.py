"""Cloned voices: the `Voice` record and file, the store, audio input, and the encoders.

- `voice.py`: `Voice` and its safetensors file format (atomic writes, checksum);
- `store.py`: `VoiceStore`, a directory of voice files, and the bundle compatibility check;
- `audio.py`: reading and conditioning a voice sample (any format soundfile reads);
- `library.py`: the bundle's encoder graphs and `engine.voices`.
"""
