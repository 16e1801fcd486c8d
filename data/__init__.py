"""Cityscapes multi-task data: label table, targets, transforms, loader, synthetic generator."""
