"""Diagnosis scripts: why the LUT sum misses a whole 224-px model on TFLite (docs/predict.md,
"Why the LUT sum misses on mobilenetv3_large_100"). They print; nothing here is a test or a default."""
