"""URL routes of the example project."""

from django.urls import path

from examples.django_site import views

urlpatterns = [
    path("", views.index),
    path("hello/<str:name>", views.hello),
    path("later", views.later),
]
