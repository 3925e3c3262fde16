"""Checks: labelled photos, accuracy, which photos calibrate and validate, and what a check
proves.
"""
