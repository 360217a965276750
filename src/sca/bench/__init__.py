"""Benchmarks: caption and mask quality on the shapes world; memory and speed tables."""
