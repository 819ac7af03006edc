"""``prism train``: projection heads from the frozen image encoder into the text encoder's space.

* :mod:`prism.training.features` -- per-catalog features, computed once and cached;
* :mod:`prism.training.heads` -- the head modules, their files, and what serving runs
  (:func:`~prism.training.heads.load_heads`, :func:`~prism.training.heads.project_image`);
* :mod:`prism.training.train` -- the training loop, validation, model card and ``main(argv)``.

Importing this package stays cheap (no torch); import the submodules.
"""
