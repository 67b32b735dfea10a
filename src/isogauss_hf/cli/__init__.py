"""Command-line tools of isogauss-hf (``isogauss-finetune``: :mod:`isogauss_hf.cli.finetune`)."""
