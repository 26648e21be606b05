"""Platform settings from the environment."""

from __future__ import annotations

from skylift.platform.settings import PlatformSettings


def test_a_region_controllers_variables_fill_in_what_the_platform_leaves_unset() -> None:
    region_env = {
        "SKYLIFT_REGION": "eu-west",
        "SKYLIFT_REGION_DATABASE_URL": "postgresql://skylift@10.0.0.2/platform",
        "SKYLIFT_REGION_REDIS_URL": "redis://10.0.0.2:6379/0",
    }
    settings = PlatformSettings.from_env(region_env)
    assert settings.region == "eu-west"
    assert settings.database_url == "postgresql://skylift@10.0.0.2/platform"
    assert settings.redis_url == "redis://10.0.0.2:6379/0"
    own = PlatformSettings.from_env({**region_env, "SKYLIFT_PLATFORM_REGION": "other"})
    assert own.region == "other"  # the platform's own variable wins
