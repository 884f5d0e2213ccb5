"""The Ray backend: provision computes on a Ray cluster and run training there as Ray jobs.

Modules: ``cluster`` (address, token, dashboard HTTP), ``resources`` (live node resources, can a size
ever be scheduled). Needs the ``[ray]`` extra: ``pip install "modelbuilder[ray]"``.
"""

from __future__ import annotations
