"""The vgg16 worker service: ImageNet VGG16 features, embedded and searched by Celery tasks."""
