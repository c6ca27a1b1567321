import uuid


class RequestIdMiddleware:
    """Gives every request an id (``request.request_id``), echoed in the ``x-request-id`` header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = f"req_{uuid.uuid4().hex}"
        response = self.get_response(request)
        response["x-request-id"] = request.request_id
        return response
