"""A one-app Django project: `tailfast run examples.django_site.wsgi:application`."""
