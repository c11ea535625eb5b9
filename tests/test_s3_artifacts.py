"""`bert-pipeline artifacts ls/show` on s3:// (moto's S3 server on loopback, tests/s3_server.py).

The test IS tests/test_pipeline_cli.py's gs:// one, collected again with its `gcs_prefix` fixture
bound to a fresh s3:// prefix, so the command passes the same checks on both stores.
"""

from __future__ import annotations

import pytest

import test_pipeline_cli as on_gs
from s3_server import s3, s3_prefix  # noqa: F401  (fixtures)


@pytest.fixture
def gcs_prefix(s3_prefix):
    """The gs:// test's fresh prefix, here on s3://."""
    return s3_prefix


test_artifacts_ls_and_show_on_s3 = on_gs.test_artifacts_ls_and_show_on_gcs
