"""Media configuration: S3 and limits from the environment (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from omninudge_server.config import ConfigError, load_settings


def test_s3_variables_select_the_s3_store(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "S3_BUCKET": "omninudge-media",
            "S3_ENDPOINT_URL": "http://127.0.0.1:8333",
            "S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
        data_dir=tmp_path,
    )
    assert (settings.s3_bucket, settings.s3_endpoint_url, settings.s3_region) == (
        "omninudge-media",
        "http://127.0.0.1:8333",
        "us-east-1",
    )
    assert (settings.aws_access_key_id, settings.aws_secret_access_key) == ("key", "secret")


def test_media_limits_default_to_20_mb_200_mb_and_50_megapixels(tmp_path: Path) -> None:
    settings = load_settings({}, data_dir=tmp_path)
    assert settings.s3_bucket is None
    assert settings.max_image_bytes == 20 * 1024 * 1024
    assert settings.max_video_bytes == 200 * 1024 * 1024
    assert settings.max_image_pixels == 50_000_000
    assert settings.media_workers == 2


def test_media_limits_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "OMNINUDGE_MAX_IMAGE_BYTES": "1000",
            "OMNINUDGE_MAX_VIDEO_BYTES": "2000",
            "OMNINUDGE_MAX_IMAGE_PIXELS": "3000",
            "OMNINUDGE_MEDIA_WORKERS": "4",
        },
        data_dir=tmp_path,
    )
    assert (settings.max_image_bytes, settings.max_video_bytes) == (1000, 2000)
    assert (settings.max_image_pixels, settings.media_workers) == (3000, 4)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"S3_BUCKET": "Not_A_Bucket!"}, "S3_BUCKET"),
        ({"S3_BUCKET": "ok-bucket", "S3_ENDPOINT_URL": "ftp://x"}, "S3_ENDPOINT_URL"),
        ({"OMNINUDGE_MAX_IMAGE_BYTES": "0"}, "OMNINUDGE_MAX_IMAGE_BYTES"),
        ({"OMNINUDGE_MAX_VIDEO_BYTES": "lots"}, "OMNINUDGE_MAX_VIDEO_BYTES"),
        ({"OMNINUDGE_MAX_IMAGE_PIXELS": "-5"}, "OMNINUDGE_MAX_IMAGE_PIXELS"),
        ({"OMNINUDGE_MEDIA_WORKERS": "1.5"}, "OMNINUDGE_MEDIA_WORKERS"),
    ],
)
def test_bad_media_settings_are_one_line_errors(
    tmp_path: Path, env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env, data_dir=tmp_path)
