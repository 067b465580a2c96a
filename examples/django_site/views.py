"""The example's views."""

import os

from django.http import HttpRequest, HttpResponse, JsonResponse


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django!", content_type="text/plain")


def hello(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"hello": name, "pid": os.getpid(), "q": request.GET.get("q")})
