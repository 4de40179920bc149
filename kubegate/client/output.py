"""How the user CLI shows an identity (``kubegate login`` and ``kubegate status``)."""

from __future__ import annotations

from datetime import UTC, datetime

from kubegate.client.profile import Profile

__all__ = ["describe_profile"]


def describe_profile(profile: Profile, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    left = profile.not_after - now
    if left.total_seconds() <= 0:
        validity = f"{profile.expires} [EXPIRED: run kubegate login]"
    else:
        minutes = int(left.total_seconds() // 60)
        validity = f"{profile.expires} [valid for {minutes // 60}h{minutes % 60:02d}m]"
    traits = ", ".join(f"{k}={','.join(v)}" for k, v in sorted(profile.traits.items())) or "(none)"
    return "\n".join([
        f"> Proxy:        {profile.proxy}",
        f"  Logged in as: {profile.user}",
        f"  Roles:        {', '.join(profile.roles)}",
        f"  Traits:       {traits}",
        f"  Connector:    {profile.connector or '-'}",
        f"  Valid until:  {validity}",
    ])
