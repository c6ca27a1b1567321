from rest_framework.routers import SimpleRouter

from inference import catalogue_views, embedding_views, views

router = SimpleRouter(trailing_slash=False)
router.register("v1/chat/completions", views.ChatCompletionViewSet, basename="chat-completion")
router.register("v1/completions", views.CompletionViewSet, basename="completion")
router.register("v1/models", views.ModelViewSet, basename="model")
router.register("generate", views.GenerateViewSet, basename="generate")
router.register("v1/sentiment", views.SentimentViewSet, basename="sentiment")
router.register("v1/qa", views.QuestionAnsweringViewSet, basename="qa")
router.register("v1/embeddings", embedding_views.EmbeddingViewSet, basename="embedding")
router.register("v1/admin/models", catalogue_views.CatalogueEntryViewSet, basename="catalogue-model")

urlpatterns = router.urls
