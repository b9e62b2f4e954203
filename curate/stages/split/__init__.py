"""The split stage: `stage` cuts each video into single-shot clips; `shots` is its shot-boundary detector."""
