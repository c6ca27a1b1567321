from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from inference.metrics_endpoint import metrics_view
from inference.views import HealthView, ReadyView

urlpatterns = [
    path("", include("inference.urls")),
    path("", include("accounts.urls")),
    path("", include("moderation.urls")),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("readyz", ReadyView.as_view(), name="readyz"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; off unless SLUICE_METRICS_* allow it
    path("v1/schema", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI; its start-up script is a separate request (/docs?script), not inline, for the strict CSP.
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="sluice/swagger_ui.html"), name="docs"),
    path("console/", include("platform.console.urls")),  # the account holder's console
    path("admin/", include("platform.admin_urls")),  # the dashboard (admin index) and report downloads
    path("admin/", admin.site.urls),
]

handler400 = "platform.errors.bad_request"
handler403 = "platform.errors.permission_denied"
handler404 = "platform.errors.not_found"
handler500 = "platform.errors.server_error"
