"""Fusion service: the one writer of the product collection (modality vectors -> indexed vectors)."""
