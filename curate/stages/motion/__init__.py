"""The motion stage: `stage` routes each clip's frames; `field` holds the motion-field maths (vectors, flow, static windows)."""
