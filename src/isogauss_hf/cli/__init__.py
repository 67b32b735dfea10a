"""Command-line tools of isogauss-hf.

* ``isogauss-finetune`` — :mod:`isogauss_hf.cli.finetune`, read as parse -> plan -> run(s) -> report:

  - parse: ``args`` (flags -> recipe);
  - plan: ``plan`` (preflight, ``--dry-run``, ``--list-recipes``), ``variants`` (the runs of a recipe, their
    labels and names), ``sweep_plan`` (a sweep: seeds x block sets x variants);
  - run(s): ``run`` (one run: shared loading, ``train_variant``), ``trainer`` (its Trainer), ``sweep`` (a sweep:
    one layer above ``train_variant``), ``sweep_store`` (its records, resume); state: ``context``;
  - report: ``report`` (a run's line and table), ``verdict`` (closing warnings), ``comparison_report`` (a sweep's
    comparison table, ``--report DIR``), ``output`` (the output directory, results.json, push);
  - beside them: data (``data``, ``datafiles``, ``dataprep``, ``filechecks``, ``taskguess``), models
    (``pipelines``, ``images``, ``task_pipelines``), ``resume``, ``analysis_hooks``;
* ``isogauss-analyze`` — :mod:`isogauss_hf.cli.analyze`;
* ``isogauss-fetch-assets`` — :mod:`isogauss_hf.cli.fetch_assets` (the offline assets).
"""
