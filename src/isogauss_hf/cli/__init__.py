"""Command-line tools of isogauss-hf.

* ``isogauss-finetune`` — :mod:`isogauss_hf.cli.finetune` (its phases: ``args``, ``plan``, ``variants``,
  ``run``, ``trainer``, ``report``, ``verdict``, ``analysis_hooks``, ``output``;
  data: ``data``, ``datafiles``, ``dataprep``; models: ``pipelines``,
  ``task_pipelines``; state: ``context``);
* ``isogauss-analyze`` — :mod:`isogauss_hf.cli.analyze`;
* ``isogauss-fetch-assets`` — :mod:`isogauss_hf.cli.fetch_assets` (the offline assets).
"""
