"""Prism services: one package per service, each with the same skeleton.

``__main__`` (entry point), ``settings`` (one typed settings object read from the environment),
``model`` (what the service loads once), ``server`` (the gRPC/HTTP servicers and ``build_service``).
"""
