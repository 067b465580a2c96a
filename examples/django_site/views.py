"""The example's views."""

import asyncio
import os

from django.http import HttpRequest, HttpResponse, JsonResponse


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django!", content_type="text/plain")


def hello(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"hello": name, "pid": os.getpid(), "q": request.GET.get("q")})


async def later(request: HttpRequest) -> JsonResponse:
    """An async view: native on ASGI, adapted by Django on WSGI."""
    await asyncio.sleep(0.01)
    return JsonResponse({"later": True, "method": request.method})
