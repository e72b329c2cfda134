"""The storage layer: one small interface over local paths, mounted paths and S3-compatible object
stores, used by prepared data, checkpoints and run files alike.

May import: the base helpers only (errors, text). Nothing above it knows whether a path is remote.
"""
