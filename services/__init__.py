"""The three services: gateway, vgg16 worker, autoencoder worker."""
