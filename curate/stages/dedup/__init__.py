"""The dedup stage: perceptual signatures per clip, and duplicates found across all clips."""
