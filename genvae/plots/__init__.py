"""Figures for people: matplotlib renderings of metrics (titled, units on the axes), as image arrays."""
