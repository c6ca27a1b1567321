"""Admin pages of the platform, mounted at ``admin/`` ahead of ``admin.site.urls`` (the dashboard is the index)."""

from django.contrib import admin
from django.urls import path

from platform.admin_views import dashboard, usage_report_download

urlpatterns = [
    path("", admin.site.admin_view(dashboard), name="sluice-dashboard"),
    path("reports/usage.csv", admin.site.admin_view(usage_report_download), {"fmt": "csv"}, name="sluice-usage-csv"),
    path("reports/usage.json", admin.site.admin_view(usage_report_download), {"fmt": "json"}, name="sluice-usage-json"),
]
