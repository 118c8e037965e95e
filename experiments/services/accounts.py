"""The control room's login: the superusers there are, and the local one ``manage.py serve``
creates on first use (never over an existing user)."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model

#: Whom ``serve`` creates when there is no superuser yet.
LOCAL_SUPERUSER = "admin"


def superuser_names(*, limit: int = 3) -> list[str]:
    """The usernames of up to ``limit`` active superusers, oldest first."""
    users = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk")
    return [user.get_username() for user in users[:limit]]


def user_exists(*, username: str) -> bool:
    return get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).exists()


def superuser_create_local(*, username: str = LOCAL_SUPERUSER) -> str:
    """Create the superuser ``username`` with a random password, and return the password (it is
    stored hashed: this is the only time anyone sees it). Refuses to touch an existing user."""
    if user_exists(username=username):
        raise ValueError(f"a user named {username!r} exists already; it was left as it is")
    password = secrets.token_urlsafe(12)  # 96 random bits, typed or pasted once
    get_user_model().objects.create_superuser(username=username, email="", password=password)
    return password
