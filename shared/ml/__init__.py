"""TensorFlow-side helpers shared by the worker services (the gateway never imports this)."""
