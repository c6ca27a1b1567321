from rest_framework.routers import SimpleRouter

from moderation import views

router = SimpleRouter(trailing_slash=False)
router.register("v1/moderations", views.ModerationViewSet, basename="moderation")

urlpatterns = router.urls
