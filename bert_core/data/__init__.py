"""Data: corpus reading, pretraining instances and TFRecords, task readers."""
