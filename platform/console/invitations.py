"""The set-password link of an invitation: Django's password-reset token, on the console's confirm page."""

from __future__ import annotations

from django.urls import reverse

from accounts.members import invitation_path_parts, invitation_send
from accounts.models import Membership


def invitation_link(*, membership: Membership, base_url: str) -> str:
    uidb64, token = invitation_path_parts(user=membership.user)
    path = reverse("console:password_reset_confirm", kwargs={"uidb64": uidb64, "token": token})
    return base_url.rstrip("/") + path


def invitation_email(*, membership: Membership, base_url: str) -> str:
    """Send the invitation email and return its link (the operator's command prints it too)."""
    link = invitation_link(membership=membership, base_url=base_url)
    invitation_send(membership=membership, link=link)
    return link
