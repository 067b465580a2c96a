"""Django settings for the example: no database, values from the environment."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
ROOT_URLCONF = "examples.django_site.urls"
WSGI_APPLICATION = "examples.django_site.wsgi.application"
INSTALLED_APPS: list[str] = []  # no models, so no database either
DATABASES: dict[str, dict[str, str]] = {}
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
USE_TZ = True
