from rest_framework.routers import SimpleRouter

from accounts import views

router = SimpleRouter(trailing_slash=False)
router.register("v1/keys", views.ApiKeyViewSet, basename="key")
router.register("v1/usage", views.UsageViewSet, basename="usage")

urlpatterns = router.urls
