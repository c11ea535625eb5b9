"""The stage round trips of tests/test_gcs_roundtrip.py on s3:// (moto's S3 server on loopback,
tests/s3_server.py): create-data reads a corpus and vocab from s3:// and writes shards and a manifest
there; pretrain stages those shards to a node-local cache, publishes whole checkpoints (marker last),
resumes from them on another "host", and after a SIGKILL reruns from the last complete checkpoint;
init checkpoints (Google's and Hugging Face's) load from s3://.

Each test here IS the gs:// test, not a copy: it runs with the gs:// module's `gcs_run` and
`gcs_prefix` fixtures bound to an s3:// run prefix instead, so both stores pass the same checks.
"""

from __future__ import annotations

import pytest

import test_gcs_roundtrip as on_gs
from s3_server import s3, s3_prefix, s3_run  # noqa: F401  (fixtures)


@pytest.fixture
def gcs_run(s3_run):
    """The gs:// tests' run prefix, here on s3://."""
    return s3_run


@pytest.fixture
def gcs_prefix(s3_prefix):
    """The gs:// tests' fresh prefix, here on s3://."""
    return s3_prefix


gs_data = on_gs.gs_data  # its shards and bert_config.json are made on whatever `gcs_run` is

test_create_data_reads_and_writes_s3 = on_gs.test_create_data_reads_and_writes_gs
test_pretrain_reads_shards_and_writes_checkpoints_on_s3 = on_gs.test_pretrain_reads_shards_and_writes_checkpoints_on_gs
test_killed_pretrain_on_s3_leaves_the_last_complete_checkpoint_and_reruns = \
    on_gs.test_killed_pretrain_on_gs_leaves_the_last_complete_checkpoint_and_reruns
test_two_ranks_publish_both_input_positions_and_resume_on_a_fresh_host_on_s3 = \
    on_gs.test_two_ranks_publish_both_input_positions_and_resume_on_a_fresh_host
test_staging_downloads_once_and_again_when_the_object_changes_on_s3 = \
    on_gs.test_staging_downloads_once_and_again_when_the_object_changes
test_init_checkpoint_on_s3_is_staged_and_loads = on_gs.test_init_checkpoint_on_gs_is_staged_and_loads
test_load_init_checkpoint_tells_the_formats_apart_on_s3 = on_gs.test_load_init_checkpoint_tells_the_formats_apart_on_gs
