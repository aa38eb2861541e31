"""The HTTP gateway: validates requests, stores images, queues jobs, assembles results.

It never imports TensorFlow (nor numpy): tasks are sent by name.
"""
