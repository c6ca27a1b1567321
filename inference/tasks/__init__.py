"""The task models' pure parts (no Django): reading QA windows and decoding spans, scoring sentiment."""
