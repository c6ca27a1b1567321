"""``/console/``: sign-in and password pages (Django's auth views), then one account's pages under ``a/<id>/``."""

from django.urls import path

from platform.console import views

app_name = "console"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.ThrottledLoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("set-password/<uidb64>/<token>/", views.SetPasswordView.as_view(), name="password_reset_confirm"),
    path("set-password/done/", views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("a/<int:account_id>/", views.account_home, name="account"),
    path("a/<int:account_id>/usage/", views.usage, name="usage"),
    path("a/<int:account_id>/usage.csv", views.usage_csv_download, name="usage_csv"),
    path("a/<int:account_id>/quotas/", views.quotas, name="quotas"),
    path("a/<int:account_id>/keys/", views.keys, name="keys"),
    path("a/<int:account_id>/keys/<str:key_id>/revoke/", views.key_revoke_view, name="key_revoke"),
    path("a/<int:account_id>/keys/<str:key_id>/rotate/", views.key_rotate_view, name="key_rotate"),
    path("a/<int:account_id>/playground/", views.playground, name="playground"),
    path("a/<int:account_id>/playground/key/", views.playground_key, name="playground_key"),
    path("a/<int:account_id>/playground/outcome/<str:request_id>/", views.playground_outcome,
         name="playground_outcome"),
    path("a/<int:account_id>/moderation/", views.moderation, name="moderation"),
    path("a/<int:account_id>/members/", views.members, name="members"),
    path("a/<int:account_id>/members/<int:member_id>/role/", views.member_role, name="member_role"),
    path("a/<int:account_id>/members/<int:member_id>/remove/", views.member_remove_view, name="member_remove"),
]
