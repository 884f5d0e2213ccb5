"""The Ray tests use ``ray_head`` and ``ray_fake_trainer`` from ``tests/ray_head.py`` (imported by
``tests/conftest.py``, so one head serves the ray tests and the backend contract suite)."""
