"""Results tables as a reproducible artefact: train and test every experiment over seeds, aggregate, render.

``python -m genvae.results run`` (``make results``) trains each experiment of the tables from its shipped
YAML on the standard MNIST split, tests it with its evaluation overlay, keeps each run's metrics JSON under
``results/runs/<experiment>/seed<k>/``, aggregates them into ``results/summary.csv`` and renders the
Markdown tables and figures the README shows.
"""
