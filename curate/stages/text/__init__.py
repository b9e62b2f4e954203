"""The text stage: PP-OCRv4 text detection on sampled frames, overlay vs scene text."""
