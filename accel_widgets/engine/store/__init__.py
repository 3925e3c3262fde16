"""The store: the workspace's records (models, artifacts, images, services), API keys, and
the clean-up order.
"""
